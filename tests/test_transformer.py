"""The GPT through the shared commands: overfit a tiny text, load with plain transformers, serve, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch

from genloom.errors import JobInterrupted

from conftest import own_database

LINE = "To be, or not to be, that is the question.\n"
TINY = dict(n_layer=2, n_head=2, n_embd=48, block_size=64)


def _sets(**kw) -> list[str]:
    return [arg for k, v in kw.items() for arg in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def lm_db(pg_server, tmp_path_factory):
    """A database of the module's own with a text dataset `hamlet` (one document, ~1.7k chars)."""
    from genloom.datasets.importers import import_text

    folder = tmp_path_factory.mktemp("lm")
    (folder / "hamlet.txt").write_text(LINE * 40)
    with own_database(pg_server) as url:
        import_text(folder / "hamlet.txt", "hamlet")
        yield url


@pytest.fixture
def cli_db(lm_db, monkeypatch, cli):
    monkeypatch.setenv("DATABASE_URL", lm_db)
    return cli


@pytest.fixture(scope="module")
def overfit(lm_db):
    """A tiny GPT trained to memorise LINE (150 steps), through the CLI."""
    import contextlib
    import io

    from genloom.cli.main import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["train", "transformer", "--dataset", "hamlet", "--steps", "150", "--batch-size", "16",
                     "--lr", "3e-3", "--name", "hamlet-gpt", *_sets(**TINY), "--json"])
    assert code == 0
    return json.loads(buf.getvalue())


def _hf_dir(ref: str) -> Path:
    from genloom.architectures.hf_export import unpack_hf
    from genloom.db.engine import session_scope
    from genloom.registry import load_checkpoint, resolve_model

    with session_scope() as s:
        return unpack_hf(load_checkpoint(s, resolve_model(s, ref)))


def test_a_few_steps_overfit_a_tiny_string(overfit):
    assert overfit["model"] == "hamlet-gpt@1"
    assert overfit["metrics"]["train_loss"] < 0.5  # ln(vocab≈22) ≈ 3.1 at the start
    assert overfit["metrics"]["val_loss"] < 0.5  # the held-out last 10 % is the same line
    assert overfit["metrics"]["val_bpc"] == pytest.approx(overfit["metrics"]["val_loss"] / 0.693147, rel=1e-3)


def test_saved_model_loads_with_plain_transformers_and_generates(overfit, cli_db):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genloom.architectures.hf_export import gpt_from_hf_dir

    directory = _hf_dir("hamlet-gpt")
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    tok = AutoTokenizer.from_pretrained(directory)
    ids = tok("To be, or ", return_tensors="pt")["input_ids"]
    ours, _ = gpt_from_hf_dir(directory)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ours.eval()(ids)[0], atol=1e-4)  # the same network
        out = model.generate(ids, max_new_tokens=10, do_sample=False)
    assert tok.decode(out[0]) == "To be, or not to be,"


def test_cli_sample_prints_text_and_stores_it(overfit, cli_db):
    out = cli_db("sample", "hamlet-gpt", "--prompt", "To be", "--max-new-tokens", "20", "--temperature", "1.5",
                 "--n", "3", "--store", "--into", "hamlet-synthetic", "--json")
    assert out.exit_code == 0, out.stderr
    items = out.json()["items"]
    shown = cli_db("datasets", "show", out.json()["dataset"], "--json").json()
    # content-addressed: identical generations are one item
    assert len(items) == 3 and shown["by_origin"] == {"real": 0, "synthetic": len(set(items))}
    text = cli_db("sample", "hamlet-gpt", "--prompt", "To be", "--max-new-tokens", "90", "--temperature", "0", "--n", "1")
    assert text.exit_code == 0, text.stderr
    # 90 new tokens exceed the 64-token context: the sampler crops the context, as nanoGPT does
    assert "To be, or not to be, that is the question.\nTo be, or not to be, that is the question.\nTo be" in text.stdout


def test_genloom_generate_serves_the_registry_model_through_the_hf_backend(overfit, cli_db):
    out = cli_db("generate", "To be, or ", "--model", "hamlet-gpt", "--max-new-tokens", "8", "--temperature", "0",
                 "--json")
    assert out.exit_code == 0, out.stderr
    body = out.json()
    assert body["model"] == "hamlet-gpt@1" and body["tokens"]["output"] >= 1


def test_genloom_ask_uses_the_registry_model(lm_db, cli_db, tmp_path):
    """A char model with a context long enough for the RAG prompt (1,024 tokens), trained a few steps."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bm25.txt").write_text("BM25 ranks documents by term frequency.")
    assert cli_db("ingest", docs, "-c", "kb").exit_code == 0
    corpus = tmp_path / "long.txt"
    corpus.write_text("The answer is in the sources [1]. " * 200)
    from genloom.datasets.importers import import_text

    import_text(corpus, "answers")
    res = cli_db("train", "transformer", "--dataset", "answers", "--steps", "3", "--name", "rag-gpt", "--json",
                 *_sets(n_layer=1, n_head=2, n_embd=32, block_size=1024))
    assert res.exit_code == 0, res.stderr
    out = cli_db("ask", "What does BM25 rank?", "-c", "kb", "--model", "rag-gpt", "-k", "1",
                 "--max-new-tokens", "5", "--no-stream", "--json")
    assert out.exit_code == 0, out.stderr
    body = out.json()
    assert body["model"] == "rag-gpt@1" and body["tokens"]["output"] >= 1
    detail = cli_db("generations", "show", body["generation_id"], "--json").json()
    assert detail["sources"], detail  # the retrieved chunk grounded the call, logged with the generation


def test_resume_continues_the_step_count_and_lr_schedule(lm_db, cli_db):
    from genloom.db.engine import session_scope
    from genloom.db.models import Metric, Run
    from genloom.training.options import TrainOptions
    from genloom.jobs.train import train

    def opts(name, resume=False):
        return TrainOptions(dataset="hamlet", steps=40, batch_size=8, lr=2e-3, name=name, checkpoint_every=10,
                            log_every=5, warmup=8, resume=resume, hparams={**TINY, "n_layer": 1})

    def interrupt(step, metrics):
        if step == 25:
            raise KeyboardInterrupt

    with pytest.raises(JobInterrupted):  # the Ctrl-C, once the job has recorded what it kept
        train("transformer", opts("resumed"), callbacks=[interrupt])
    with session_scope() as s:
        assert s.scalar(sa.select(Run.status).where(Run.params["name"].astext == "resumed")) == "interrupted"
    resumed = train("transformer", opts("resumed", resume=True))
    assert resumed.resumed_from_step == 20 and resumed.steps == 40
    straight = train("transformer", opts("straight"))

    def lrs(run_id):
        with session_scope() as s:
            rows = s.execute(sa.select(Metric.step, Metric.value)
                             .where(Metric.run_id == run_id, Metric.name == "lr").order_by(Metric.step)).all()
        return {step: value for step, value in rows}

    after, reference = lrs(resumed.run_id), lrs(straight.run_id)
    assert max(after) == 40 and 25 in after and 30 in after  # steps carried on from 20, not from 0
    for step in (25, 30, 35, 40):
        assert after[step] == pytest.approx(reference[step], rel=1e-9)  # same point on warmup + cosine


def test_fine_tuning_with_init_starts_from_the_trained_model(overfit, cli_db):
    res = cli_db("train", "transformer", "--dataset", "hamlet", "--init", "hamlet-gpt", "--steps", "5",
                 "--name", "hamlet-ft", "--set", "eval_iters=2", "--json")
    assert res.exit_code == 0, res.stderr
    assert res.json()["metrics"]["val_loss"] < 1.0  # a scratch model after 5 steps is near ln(vocab) ≈ 3
    # a local Hugging Face directory works too
    res = cli_db("train", "transformer", "--dataset", "hamlet", "--init", str(_hf_dir("hamlet-gpt")), "--steps", "2",
                 "--name", "hamlet-ft-dir", "--json")
    assert res.exit_code == 0, res.stderr


def test_bad_input_is_one_line(overfit, cli_db, tmp_path):
    from genloom.datasets.importers import import_digits

    import_digits("digits")
    bert = tmp_path / "resnet"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "resnet", "architectures": ["ResNetModel"]}))
    cases = [
        (["train", "transformer", "--dataset", "digits", "--steps", "1"], "transformer trains on text datasets"),
        (["train", "transformer", "--dataset", "hamlet", "--steps", "1", "--set", "block_size=4096"],
         "too short for the context length 4096"),
        (["train", "transformer", "--dataset", "hamlet", "--init", str(bert)], "is not a causal LM"),
        (["train", "transformer", "--dataset", "hamlet", "--init", str(tmp_path)], "has no config.json"),
        (["train", "transformer", "--dataset", "hamlet", "--init", "no-such-model"], "neither a local directory nor a registry model"),
        (["train", "transformer", "--dataset", "hamlet", "--set", "tokenizer=words"], "use char or bpe"),
        (["sample", "hamlet-gpt", "--guidance", "2"], "transformer models do not support --guidance"),
        (["sample", "hamlet-gpt", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    ]
    for args, needle in cases:
        res = cli_db(*args)
        assert res.exit_code == 1, (args, res.stdout)
        assert needle in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_bpe_tokenizer_trains_on_the_split_and_round_trips(lm_db, cli_db):
    res = cli_db("train", "transformer", "--dataset", "hamlet", "--steps", "2", "--name", "hamlet-bpe", "--json",
                 *_sets(tokenizer="bpe", vocab_size=300, n_layer=1, n_head=2, n_embd=32, block_size=16))
    assert res.exit_code == 0, res.stderr
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_hf_dir("hamlet-bpe"))
    ids = tok("To be, or not to be")["input_ids"]
    assert len(ids) < len("To be, or not to be")  # merges learnt from the training split
    assert tok.decode(ids) == "To be, or not to be"
