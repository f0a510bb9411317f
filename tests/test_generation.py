"""The logged call end to end on a real database: `genloom ask | generate | feedback | generations |
sessions | templates`, atomicity, sessions, registry models, bad input."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import sqlalchemy as sa

from generation_support import counts, ingest_corpus, tiny_lm


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return tiny_lm(tmp_path_factory.mktemp("lm"))


@pytest.fixture
def kb(engine):
    ingest_corpus("kb")
    return engine


def _one_line_error(result, *needles):
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- ask


def test_extractive_ask_cites_the_right_document_and_logs_one_call(cli, kb):
    result = cli("ask", "When was the Eiffel Tower completed?", "--collection", "kb", "--json")
    assert result.exit_code == 0, result.stderr
    out = result.json()
    assert list(out) == ["generation_id", "session_id", "prompt_id", "answer", "citations", "model", "timings_ms", "tokens"]
    assert out["model"] == "extractive"
    assert "1889" in out["answer"]
    assert out["citations"][0]["doc_id"] == "eiffel"
    assert out["citations"][0]["title"] == "The Eiffel Tower"
    assert set(out["citations"][0]) == {"n", "doc_id", "chunk_id", "title", "location"}  # no page or heading in a JSONL record
    assert f"[{out['citations'][0]['n']}]" in out["answer"]
    assert set(out["timings_ms"]) == {"retrieval", "generation", "total"}
    assert out["timings_ms"]["total"] >= out["timings_ms"]["retrieval"] + out["timings_ms"]["generation"] * 0.99
    assert out["tokens"]["input"] > 20 and out["tokens"]["output"] > 3

    assert counts(kb) == {"sessions": 1, "prompts": 1, "generations": 1, "generation_sources": 4, "feedback": 0}
    with kb.connect() as conn:
        gen = conn.execute(sa.text("SELECT * FROM generations")).mappings().one()
        sources = conn.execute(sa.text(
            "SELECT gs.rank, gs.chunk_id, gs.score, gs.bm25_rank, gs.vector_rank, d.external_id "
            "FROM generation_sources gs JOIN chunks c ON c.id = gs.chunk_id JOIN documents d ON d.id = c.document_id "
            "ORDER BY gs.rank")).mappings().all()
        prompt = conn.execute(sa.text("SELECT * FROM prompts")).mappings().one()
    assert gen["status"] == "ok" and gen["error"] is None and "1889" in gen["output"]
    assert gen["model_name"] == "extractive" and gen["params"]["collection"] == "kb" and gen["params"]["k"] == 5
    assert gen["retrieval_ms"] > 0 and gen["generation_ms"] > 0 and gen["total_ms"] >= gen["generation_ms"]
    assert [s["rank"] for s in sources] == [1, 2, 3, 4]
    assert sources[0]["external_id"] == "eiffel" and sources[0]["vector_rank"] == 1
    cited = out["citations"][0]
    assert any(s["rank"] == cited["n"] and s["chunk_id"] == cited["chunk_id"] for s in sources)
    assert prompt["template_name"] == "default" and prompt["template_version"] == 1 and prompt["parent_id"] is None
    assert "[1] The Eiffel Tower" in gen["rendered_prompt"]


def test_ask_streams_text_then_sources(cli, kb):
    result = cli("ask", "What does chlorophyll absorb?", "-c", "kb", "-k", "2")
    assert result.exit_code == 0, result.stderr
    answer, _, sources = result.stdout.partition("\nSources:\n")
    assert "blue and red light" in answer
    assert sources.splitlines()[0] == "*[1] Photosynthesis"  # cited: title, then page and heading where known
    assert len(sources.strip().splitlines()) == 2  # -k 2
    assert "generation 1 · session 1" in result.stderr


def test_where_filter_restricts_sources(cli, kb):
    out = cli("ask", "When was the Eiffel Tower completed?", "-c", "kb", "--where", "topic=rust", "--json").json()
    # Only the Rust document is searched, and it does not answer: the extractive backend abstains.
    assert out["answer"] == "The sources do not answer this." and out["citations"] == []
    with kb.connect() as conn:
        source_docs = conn.execute(sa.text(
            "SELECT d.external_id FROM generation_sources gs JOIN chunks c ON c.id = gs.chunk_id "
            "JOIN documents d ON d.id = c.document_id")).scalars().all()
        finish = conn.execute(sa.text("SELECT params->>'finish_reason' FROM generations")).scalar()
    assert set(source_docs) == {"rust"} and finish == "abstain"


def test_sessions_chain_and_earlier_turns_reach_the_prompt(cli, kb):
    first = cli("ask", "When was the Eiffel Tower completed?", "-c", "kb", "--json").json()
    second = cli("ask", "Who designed it?", "-c", "kb", "--session", first["session_id"], "--json").json()
    third = cli("ask", "What is BM25?", "-c", "kb", "--session", first["session_id"], "--json").json()
    assert first["session_id"] == second["session_id"] == third["session_id"]
    with kb.connect() as conn:
        parents = dict(conn.execute(sa.text("SELECT id, parent_id FROM prompts")).all())
        rendered = conn.execute(
            sa.text("SELECT rendered_prompt FROM generations WHERE id = :g"), {"g": third["generation_id"]}
        ).scalar()
    assert parents == {first["prompt_id"]: None, second["prompt_id"]: first["prompt_id"], third["prompt_id"]: second["prompt_id"]}
    assert "When was the Eiffel Tower completed?" in rendered and "Who designed it?" in rendered
    assert first["answer"] in rendered

    shown = cli("sessions", "show", first["session_id"], "--json").json()
    assert [t["question"] for t in shown["turns"]] == ["When was the Eiffel Tower completed?", "Who designed it?", "What is BM25?"]
    assert [t["generation_id"] for t in shown["turns"]] == [first["generation_id"], second["generation_id"], third["generation_id"]]
    assert shown["collection"] == "kb"


def test_feedback_joins_the_generation(cli, kb):
    out = cli("ask", "What is BM25?", "-c", "kb", "--json").json()
    a = cli("feedback", out["generation_id"], "--score", "5", "--label", "correct", "--user", "ana", "--json")
    b = cli("feedback", out["generation_id"], "--down", "--comment", "too long")
    assert a.exit_code == 0 and b.exit_code == 0, (a.stderr, b.stderr)
    assert a.json()["score"] == 5 and a.json()["user"] == "ana"
    detail = cli("generations", "show", out["generation_id"], "--json").json()
    assert detail["answer"] == out["answer"] and detail["prompt"] == "What is BM25?"
    assert [(f["score"], f["thumbs"], f["label"]) for f in detail["feedback"]] == [(5, None, "correct"), (None, -1, None)]
    assert detail["sources"][0]["doc_id"] == "bm25" and detail["sources"][0]["bm25_rank"] == 1
    with kb.connect() as conn:
        joined = conn.execute(sa.text(
            "SELECT p.text, g.model_name, avg(f.score) FROM feedback f JOIN generations g ON g.id = f.generation_id "
            "JOIN prompts p ON p.id = g.prompt_id GROUP BY 1, 2")).one()
    assert tuple(joined) == ("What is BM25?", "extractive", 5.0)


# --------------------------------------------------------------------------- atomicity and failures


def test_a_failed_generation_is_recorded_as_error(cli, kb, monkeypatch):
    from genloom.generation.extractive import ExtractiveBackend

    def boom(self, *a, **kw):
        raise RuntimeError("the accelerator caught fire")

    monkeypatch.setattr(ExtractiveBackend, "generate", boom)
    result = cli("ask", "What is BM25?", "-c", "kb")
    line = _one_line_error(result, "generation 1 failed", "RuntimeError: the accelerator caught fire")
    assert line
    assert counts(kb)["prompts"] == 1
    with kb.connect() as conn:
        gen = conn.execute(sa.text("SELECT status, error, output, total_ms FROM generations")).mappings().one()
    assert gen["status"] == "error" and "caught fire" in gen["error"] and gen["output"] is None
    assert gen["total_ms"] is not None


@pytest.mark.parametrize("where", ["after_sources", "interrupt"])
def test_a_failure_mid_call_leaves_no_half_rows(cli, kb, monkeypatch, where):
    import genloom.generation.call as call
    from genloom.generation.extractive import ExtractiveBackend

    if where == "after_sources":  # every row is flushed, then the call dies before commit
        def boom(*a, **kw):
            raise RuntimeError("crash after the rows were written")

        monkeypatch.setattr(call, "citations_of", boom)
    else:
        def interrupt(self, *a, **kw):
            raise KeyboardInterrupt

        monkeypatch.setattr(ExtractiveBackend, "generate", interrupt)
    result = cli("ask", "What is BM25?", "-c", "kb")
    assert result.exit_code != 0
    assert counts(kb) == {"sessions": 0, "prompts": 0, "generations": 0, "generation_sources": 0, "feedback": 0}


# --------------------------------------------------------------------------- templates


def test_templates_add_version_and_use(cli, kb, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("Sources:\n{sources}\n\nQ: {question}\nA (cite [n]):")
    first = cli("templates", "add", "terse", "--file", f, "--json").json()
    again = cli("templates", "add", "terse", "--file", f, "--json").json()
    f.write_text("Q: {question}\n\n{sources}")
    second = cli("templates", "add", "terse", "--file", f, "--json").json()
    assert (first["version"], again["version"], second["version"]) == (1, 1, 2)
    listed = cli("templates", "list", "--json").json()
    assert [(t["name"], t["version"]) for t in listed] == [("default", 1), ("terse", 1), ("terse", 2)]
    out = cli("ask", "What is BM25?", "-c", "kb", "--template", "terse@1", "--json").json()
    detail = cli("generations", "show", out["generation_id"], "--json").json()
    assert detail["template"] == "terse@1" and detail["rendered_prompt"].startswith("user: Sources:\n[1] BM25 ranking")
    latest = cli("ask", "What is BM25?", "-c", "kb", "--template", "terse", "--json").json()
    assert cli("generations", "show", latest["generation_id"], "--json").json()["template"] == "terse@2"


def test_template_with_unknown_field_is_refused(cli, engine, tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("{context}\n{question}")
    _one_line_error(cli("templates", "add", "bad", "--file", f), "unknown field", "{context}")
    _one_line_error(cli("templates", "add", "bad", "--file", tmp_path / "missing.txt"), "cannot read template file")


# --------------------------------------------------------------------------- Hugging Face models


def test_generate_with_a_local_hf_model_is_logged(cli, engine, lm_dir):
    out = cli("generate", "hello fox", "--model", lm_dir, "--max-new-tokens", "7", "--json")
    assert out.exit_code == 0, out.stderr
    body = out.json()
    assert body["citations"] == [] and body["model"] == str(lm_dir)
    assert 1 <= body["tokens"]["output"] <= 7
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(lm_dir))
    rendered = tok.apply_chat_template([{"role": "user", "content": "hello fox"}], tokenize=False, add_generation_prompt=True)
    assert rendered == "<|user|>\nhello fox</s>\n<|assistant|>\n"
    expected_input = len(tok(rendered, add_special_tokens=False)["input_ids"])
    assert body["tokens"]["input"] == expected_input
    with engine.connect() as conn:
        gen = conn.execute(sa.text("SELECT * FROM generations")).mappings().one()
    assert gen["model_revision"] and len(gen["model_revision"]) == 64
    assert gen["params"]["max_new_tokens"] == 7 and gen["input_tokens"] == expected_input
    assert counts(engine)["generation_sources"] == 0


def test_ask_with_hf_model_numbers_sources_in_its_prompt(cli, kb, lm_dir):
    out = cli("ask", "What is BM25?", "-c", "kb", "--model", lm_dir, "--max-new-tokens", "5", "--no-stream", "--json")
    assert out.exit_code == 0, out.stderr
    detail = cli("generations", "show", out.json()["generation_id"], "--json").json()
    assert detail["rendered_prompt"].startswith("<|user|>\nAnswer the question using only the numbered sources")
    assert "[1] BM25 ranking" in detail["rendered_prompt"]


def test_registry_model_loads_by_name(cli, engine, lm_dir, genloom_home, monkeypatch):
    from genloom.db.engine import session_scope
    from genloom.registry import register_model

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(lm_dir.iterdir()):
            tar.add(path, arcname=path.name)
    with session_scope() as s:
        model = register_model(s, name="tiny-gpt", architecture="transformer", checkpoint=buf.getvalue(), format="hf-tar")
        model_id, sha = model.id, model.sha256
    out = cli("generate", "hello", "--model", "tiny-gpt@1", "--max-new-tokens", "3", "--json")
    assert out.exit_code == 0, out.stderr
    assert out.json()["model"] == "tiny-gpt@1"
    assert (genloom_home / "models" / f"tiny-gpt@1-{sha[:12]}" / "config.json").exists()
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT model_id, model_revision FROM generations")).one()
    assert tuple(row) == (model_id, sha)
    # latest version by bare name
    assert cli("generate", "hello", "--model", "tiny-gpt", "--max-new-tokens", "2", "--json").exit_code == 0


# --------------------------------------------------------------------------- bad input


def _vit_dir(tmp_path):
    d = tmp_path / "vit"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 8}))
    return d


BAD_INPUT = [
    (["ask", "   ", "-c", "kb"], ["empty question"]),
    (["ask", "What?", "-c", "nope"], ["collection 'nope' not found"]),
    (["ask", "What?", "-c", "kb", "--session", "999"], ["no session 999"]),
    (["ask", "What?", "-c", "kb", "--template", "nope"], ["no prompt template 'nope'"]),
    (["ask", "What?", "-c", "kb", "--model", "no-such-model"], ["neither 'extractive', a local directory, nor a registry model",
                                                                 "(train one with `genloom train`, or add a server"]),
    (["ask", "What?", "-c", "kb", "--model", "VIT"], ["is not a causal language model", "'vit'"]),
    (["ask", "What?", "-c", "kb", "--where", "novalue"], ["--where expects key=value"]),
    (["ask", "What?", "-c", "kb", "-k", "0"], ["k must be between 1 and 100"]),
    (["ask", "What?", "-c", "kb", "--temperature", "-1"], ["temperature must be between 0 and 5"]),
    (["ask", "What?", "-c", "kb", "--model", "LM", "--max-new-tokens", "300"], ["cannot fit even one source"]),
    (["ask", "What?", "-c", "kb", "--model", "LM", "--max-new-tokens", "600"], ["leaves no room for a prompt"]),
    (["generate", "hello"], ["extractive backend answers from retrieved sources"]),
    (["feedback", "999", "--score", "4"], ["no generation 999"]),
    (["feedback", "1", "--score", "9"], ["score must be a whole number from 1 to 5"]),
    (["feedback", "1"], ["give --score 1..5, --up or --down"]),
    (["generations", "show", "999"], ["no generation 999"]),
    (["sessions", "show", "999"], ["no session 999"]),
]


def test_bad_input_is_one_line_and_writes_nothing(cli, kb, lm_dir, tmp_path):
    # One database for every case: each case must leave the counts exactly as they were.
    assert cli("ask", "What is BM25?", "-c", "kb", "--json").exit_code == 0  # generation 1, for feedback cases
    before = counts(kb)
    vit = str(_vit_dir(tmp_path))
    for args, needles in BAD_INPUT:
        args = [vit if a == "VIT" else str(lm_dir) if a == "LM" else a for a in args]
        _one_line_error(cli(*args), *needles)
        assert counts(kb) == before, args
