"""Ingestion: loaders, token-aware chunking, idempotency, versions, bad input, interruption."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from genloom.errors import JobInterrupted


@pytest.fixture(scope="module")
def embedder():
    from genloom.embeddings import get_embedder

    return get_embedder()


def _counts(session, collection: str = "c") -> dict:
    return dict(
        session.execute(
            sa.text(
                """
                SELECT
                  (SELECT count(*) FROM documents d JOIN collections c ON c.id = d.collection_id WHERE c.name = :n) AS documents,
                  (SELECT count(*) FROM chunks ch JOIN documents d ON d.id = ch.document_id
                     JOIN collections c ON c.id = d.collection_id WHERE c.name = :n) AS chunks,
                  (SELECT count(*) FROM embeddings e JOIN chunks ch ON ch.id = e.chunk_id JOIN documents d ON d.id = ch.document_id
                     JOIN collections c ON c.id = d.collection_id WHERE c.name = :n) AS embeddings,
                  (SELECT n_chunks FROM retrieval_collection_stats s JOIN collections c ON c.id = s.collection_id
                     WHERE c.name = :n) AS bm25_n
                """
            ),
            {"n": collection},
        ).mappings().one()
    )


def _tiny_pdf(text: str) -> bytes:
    """A one-page PDF with one line of text (hand-built: offsets in the xref are exact)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_loaders_read_every_format(tmp_path):
    from ingest.loaders import LoadOptions, discover, load_file

    (tmp_path / "a.txt").write_text("Plain text body.")
    (tmp_path / "b.md").write_text("---\nauthor: x\n---\n# The Title\n\nMarkdown *body* here.")
    (tmp_path / "c.html").write_text(
        "<html><head><title>Page</title><script>var tracking = 1;</script></head><body>"
        "<nav>Home | About | Login</nav><main><h1>Heading</h1><p>Main article text.</p></main>"
        "<footer>Copyright footer</footer></body></html>"
    )
    (tmp_path / "d.pdf").write_bytes(_tiny_pdf("Hello from a PDF page"))
    (tmp_path / "e.jsonl").write_text(json.dumps({"id": "r1", "title": "T1", "text": "Record one.", "lang": "en"}) + "\n")
    (tmp_path / "f.csv").write_text("id,title,text\nrow1,CSV title,CSV body text\n")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    sources = list(discover([tmp_path], "auto"))
    assert [(s.path.name, s.format, s.problem and s.problem.reason) for s in sources] == [
        ("a.txt", "text", None), ("b.md", "markdown", None), ("c.html", "html", None), ("d.pdf", "pdf", None),
        ("e.jsonl", "jsonl", None), ("f.csv", "csv", None), ("ignored.bin", None, "binary"),
    ]
    docs = {s.path.name: load_file(s.path, s.format, LoadOptions()).documents for s in sources if s.format}
    assert docs["a.txt"][0].text == "Plain text body." and docs["a.txt"][0].title == "a"
    assert docs["b.md"][0].title == "The Title" and docs["b.md"][0].text == "Markdown *body* here."
    html = docs["c.html"][0]
    assert html.title == "Page" and "Main article text." in html.text
    assert not any(junk in html.text for junk in ("tracking", "Login", "Copyright"))
    assert "Hello from a PDF page" in docs["d.pdf"][0].text
    record = docs["e.jsonl"][0]
    assert (record.external_id, record.title, record.text, record.metadata) == ("r1", "T1", "Record one.", {"lang": "en"})
    assert (docs["f.csv"][0].external_id, docs["f.csv"][0].text) == ("row1", "CSV body text")


def test_beir_folder_reads_only_the_corpus_and_keeps_ids(tmp_path):
    from ingest.loaders import LoadOptions, discover, load_file

    (tmp_path / "qrels").mkdir()
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "a query"}) + "\n")
    with gzip.open(tmp_path / "corpus.jsonl.gz", "wt") as f:
        f.write(json.dumps({"_id": "4983", "title": "Title", "text": "Abstract."}) + "\n")
    found = list(discover([tmp_path], "auto"))
    assert [(s.path.name, s.format) for s in found] == [("corpus.jsonl.gz", "beir")]
    doc = load_file(found[0].path, "beir", LoadOptions()).documents[0]
    assert (doc.external_id, doc.title, doc.text) == ("4983", "Title", "Abstract.")


def test_chunks_fit_the_model_and_keep_sentences_whole(embedder):
    from ingest.chunking import ChunkConfig, Chunker, embedding_text

    tokenizer, limit = embedder.tokenizer, embedder.max_seq_length
    sentences = [f"Sentence number {i} talks about topic {i % 5} in some detail." for i in range(120)]
    text = " ".join(sentences[:60]) + "\n\n" + " ".join(sentences[60:])
    title = "A fairly long title about chunking documents for retrieval"
    chunks = Chunker(tokenizer, limit, ChunkConfig(overlap=32)).chunk(text, title)
    assert len(chunks) > 3
    for chunk in chunks:
        # The whole embedded input (title + chunk + [CLS]/[SEP]) fits the model: nothing truncated.
        assert len(tokenizer(embedding_text(title, chunk.text))["input_ids"]) <= limit
        assert chunk.token_count == len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"])
        assert chunk.text.startswith("Sentence number") and chunk.text.endswith("detail.")
    # Overlap: each chunk starts with the sentence(s) the previous one ended with.
    for previous, following in zip(chunks, chunks[1:]):
        assert previous.text.split(". ")[-1] in following.text
    small = Chunker(tokenizer, limit, ChunkConfig(max_tokens=40, overlap=0)).chunk("word " * 500)
    assert all(c.token_count <= 40 for c in small) and len(small) >= 12


def test_ingest_cli_then_reingest_is_a_noop(db_url, cli, tmp_path, session, embedder):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "one.md").write_text("# One\n\nThe first document talks about apples.")
    (docs / "sub" / "two.txt").write_text("The second document talks about pears.\n\nAnd a second paragraph.")
    first = cli("ingest", docs, "--collection", "c", "--meta", "team=fruit", "--json")
    assert first.exit_code == 0, first.stderr
    summary = first.json()
    assert {k: summary[k] for k in ("written", "unchanged", "chunks", "skipped", "failed", "problems")} == {
        "written": 2, "unchanged": 0, "chunks": 2, "skipped": {"total": 0, "by_reason": {}},
        "failed": {"total": 0, "by_reason": {}}, "problems": []}
    before = _counts(session)
    assert before == {"documents": 2, "chunks": 2, "embeddings": 2, "bm25_n": 2}
    again = cli("ingest", docs, "--collection", "c", "--meta", "team=fruit", "--json").json()
    assert (again["written"], again["chunks"], again["unchanged"]) == (0, 0, 2)
    assert _counts(session) == before
    runs = session.execute(sa.text("SELECT kind, status, summary FROM runs ORDER BY id")).all()
    assert [(r.kind, r.status) for r in runs] == [("ingest", "succeeded"), ("ingest", "succeeded")]
    assert runs[0].summary["written"] == 2 and runs[1].summary["unchanged"] == 2
    meta = session.scalars(sa.text("SELECT metadata->>'team' FROM documents")).all()
    assert meta == ["fruit", "fruit"]
    human = cli("ingest", docs, "--collection", "c", "--meta", "team=fruit")
    assert human.exit_code == 0
    assert "c: 0 written, 2 unchanged, skipped 0, failed 0; 0 chunks in" in human.stderr


def test_changed_file_becomes_version_2_and_search_sees_only_current(db_url, cli, tmp_path, session, embedder):
    from genloom.retrieval.search import search

    path = tmp_path / "policy.txt"
    path.write_text("Refunds are accepted within 14 days of purchase.")
    assert cli("ingest", path, "--collection", "c", "--json").exit_code == 0
    path.write_text("Refunds are accepted within 30 days of purchase, with a receipt.")
    result = cli("ingest", path, "--collection", "c", "--json").json()
    assert (result["written"], result["new_versions"]) == (1, 1)
    versions = session.execute(
        sa.text("SELECT version, superseded_at IS NOT NULL FROM documents ORDER BY version")
    ).all()
    assert [tuple(v) for v in versions] == [(1, True), (2, False)]
    assert _counts(session)["bm25_n"] == 1  # the old version's chunk left the statistics
    for mode in ("bm25", "vector", "hybrid"):
        hits = search(session, "refund days", collection="c", mode=mode)
        assert [h.document_version for h in hits] == [2], mode
        assert "30 days" in hits[0].text
    everything = search(session, "refund days", collection="c", include_superseded=True)
    assert sorted(h.document_version for h in everything) == [1, 2]
    # BM25 statistics after superseding equal those of a fresh ingest of the current version.
    df = session.execute(sa.text("SELECT term, df FROM retrieval_term_stats WHERE df > 0 ORDER BY term")).all()
    current_terms = session.scalars(
        sa.text("SELECT DISTINCT term FROM retrieval_postings WHERE current ORDER BY term")
    ).all()
    assert [t for t, _ in df] == current_terms and all(n == 1 for _, n in df)


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (lambda d: None, ("missing.txt",), "error: path not found: "),
        (lambda d: (d / "bin.txt").write_bytes(b"\x00\x01\x02binary"), ("bin.txt",), "error: nothing ingested: "),
        (lambda d: (d / "empty.txt").write_text("   \n"), ("empty.txt",), "error: nothing ingested: "),
        (lambda d: (d / "big.txt").write_text("x" * 2000), ("big.txt", "--max-bytes", "1000"), "error: nothing ingested: "),
        (lambda d: (d / "bad.jsonl").write_text('{"id": 1, "text": "ok"}\n{oops\n'), ("bad.jsonl",), "error: nothing ingested: "),
    ],
    ids=["missing", "binary", "empty", "too-large", "malformed-jsonl"],
)
def test_bad_input_is_one_line_and_exit_1(db_url, cli, tmp_path, session, embedder, setup, args, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    result = cli("ingest", *args, "--collection", "c")
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(message), result.stderr
    if args[0] == "bad.jsonl":
        assert "bad.jsonl:2: invalid JSON" in last and "--skip-bad" in last
    if args[0] == "big.txt":
        assert "--max-bytes" in last
    if args[0] == "bin.txt":
        assert "binary file" in last
    assert session.scalar(sa.text("SELECT count(*) FROM chunks")) == 0  # a failed file leaves nothing


def test_skip_bad_continues_past_malformed_lines_and_reports_them(db_url, cli, tmp_path, embedder):
    data = tmp_path / "records.jsonl"
    data.write_text('{"id": "a", "text": "alpha"}\nnot json\n{"id": "b"}\n{"id": "c", "text": "gamma"}\n')
    result = cli("ingest", data, "--collection", "c", "--skip-bad", "--json")
    assert result.exit_code == 0
    summary = result.json()
    assert summary["written"] == 2 and summary["skipped"] == {"total": 2, "by_reason": {"bad record": 2}}
    assert [(p["path"], p["status"], p["reason"]) for p in summary["problems"]] == [
        (f"{data}:2", "skipped", "bad record"), (f"{data}:3", "skipped", "bad record")]
    unknown = cli("search", "alpha", "--collection", "nope")
    assert unknown.exit_code == 1 and unknown.stderr.startswith("error: collection 'nope' not found")


def test_interrupted_ingest_leaves_whole_documents_and_rerun_continues(db_url, tmp_path, session, embedder):
    from ingest.pipeline import IngestOptions, ingest

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(7):
        (folder / f"doc{i}.txt").write_text(f"Document {i}. " + " ".join(f"Sentence {j} of document {i}." for j in range(40)))
    calls = []

    def stop_after_first_batch(task, done, total, status):  # the shared ProgressFn; its status counts documents
        calls.append(int(m[1]) if (m := re.search(r" · (\d+) documents$", status)) else 0)
        if calls[-1] >= 3:
            raise KeyboardInterrupt

    with pytest.raises(JobInterrupted):  # the Ctrl-C, once the job has recorded what it kept
        ingest([folder], IngestOptions(collection="c", batch_documents=3), progress=stop_after_first_batch)
    status, summary = session.execute(sa.text("SELECT status, summary FROM runs ORDER BY id DESC LIMIT 1")).one()
    assert status == "interrupted"
    chunks = session.scalar(sa.text("SELECT count(*) FROM chunks"))
    assert summary == {"committed": {"documents": 3, "chunks": chunks}}  # what the run says it kept is what is there
    committed = session.execute(
        sa.text(
            "SELECT d.id, count(c.id) AS chunks, count(e.chunk_id) AS vectors FROM documents d "
            "LEFT JOIN chunks c ON c.document_id = d.id LEFT JOIN embeddings e ON e.chunk_id = c.id GROUP BY d.id"
        )
    ).all()
    assert len(committed) == 3
    assert all(row.chunks >= 2 and row.chunks == row.vectors for row in committed)  # each document whole
    rerun = ingest([folder], IngestOptions(collection="c", batch_documents=3))
    assert (rerun.unchanged, rerun.documents) == (3, 4)
    assert _counts(session)["documents"] == 7


def test_a_collection_deleted_while_ingesting_is_one_clear_line(db_url, tmp_path, session, embedder):
    """Issue 25, finding 9: `collections delete` racing an ingest was a raw foreign-key message."""
    from genloom.db.engine import session_scope
    from genloom.errors import GenloomError
    from genloom.retrieval.documents import delete_collection
    from ingest.pipeline import IngestOptions, ingest

    folder = tmp_path / "race"
    folder.mkdir()
    for i in range(2):
        (folder / f"doc{i}.txt").write_text(f"Document {i}. " + " ".join(f"Sentence {j}." for j in range(20)))
    deleted = []

    def delete_while_embedding(task, done, total, status):  # the batch is embedded, not yet written: delete now
        if re.match(r"[1-9][\d,]* chunks embedded", status) and not deleted:
            with session_scope() as other:  # its own connection and transaction, as the CLI's would be
                delete_collection(other, "c")
            deleted.append(True)

    with pytest.raises(GenloomError) as raised:
        ingest([folder], IngestOptions(collection="c"), progress=delete_while_embedding)
    assert deleted
    assert str(raised.value) == "collection 'c' was deleted while ingesting"
    status, error = session.execute(sa.text("SELECT status, error FROM runs ORDER BY id DESC LIMIT 1")).one()
    assert status == "failed" and "was deleted while ingesting" in error


def test_an_ingest_failing_at_its_first_write_leaves_a_failed_run_with_the_cause(db_url, tmp_path, session, embedder):
    """Issue 25, finding 9: a full disk at the first write left no run row. The server's own
    disk-full error (SQLSTATE 53100) is raised by a trigger where a new collection is written."""
    from ingest.pipeline import IngestOptions, ingest

    session.execute(
        sa.text(
            "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$"
        )
    )
    session.execute(
        sa.text("CREATE TRIGGER disk_full BEFORE INSERT ON collections FOR EACH ROW EXECUTE FUNCTION disk_full()")
    )
    session.commit()
    (tmp_path / "a.txt").write_text("One small document about disks.")
    with pytest.raises(Exception, match="No space left on device"):
        ingest([tmp_path / "a.txt"], IngestOptions(collection="full"))
    runs = session.execute(sa.text("SELECT kind, status, error FROM runs")).all()
    assert len(runs) == 1
    kind, status, error = runs[0]
    assert (kind, status) == ("ingest", "failed") and "No space left on device" in error
