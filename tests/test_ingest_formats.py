"""Ingest reads what users have and accounts for every file: formats, encodings, bad input,
the report, streamed large files, --sync."""

from __future__ import annotations

import dataclasses
import gzip
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

FRENCH = "Le café est très chaud. Où est la bibliothèque? Déjà vu, naïve façade, élève. " * 3


@pytest.fixture(scope="module")
def embedder():
    from genloom.embeddings import get_embedder

    return get_embedder()


def _docx(path: Path, title: str, paragraphs: list[str]) -> None:
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    for p in paragraphs:
        document.add_paragraph(p)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "cell one", "cell two"
    document.save(str(path))


def _epub(path: Path) -> None:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("id1")
    book.set_title("A Small Book")
    book.set_language("en")
    chapters = []
    for i, body in enumerate(["The first chapter is about lighthouses.", "The second chapter is about tides."], 1):
        c = epub.EpubHtml(title=f"Chapter {i}", file_name=f"c{i}.xhtml", lang="en")
        c.content = f"<html><body><h1>Chapter {i}</h1><p>{body}</p></body></html>"
        book.add_item(c)
        chapters.append(c)
    book.toc = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = chapters
    epub.write_epub(str(path), book)


def _debian_like(folder: Path) -> dict[str, str]:
    """A documentation folder as a Debian system has them; returns name -> what it holds."""
    folder.mkdir()
    (folder / "README").write_text("This package provides the frobnicator tool for sorting widgets.\n")
    (folder / "COPYING").write_bytes(FRENCH.encode("latin-1"))
    (folder / "changelog.gz").write_bytes(gzip.compress(b"frob (1.2) unstable; urgency=low\n\n  * Fix the widget sorter.\n"))
    (folder / "NEWS.md.gz").write_bytes(gzip.compress(b"# News\n\nVersion 1.2 sorts widgets faster.\n"))
    (folder / "guide.xhtml").write_bytes(
        ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml">'
         "<head><title>Guide à part</title></head><body><p>Voilà: très utile.</p></body></html>").encode("latin-1")
    )
    (folder / "index.html").write_bytes(
        '<html><head><meta charset="windows-1252"><title>Index</title></head><body><p>Caf\xe9 \x93quoted\x94</p></body></html>'
        .encode("latin-1")
    )
    _docx(folder / "manual.docx", "Manual", ["Install the frobnicator with apt.", "Then run frob --sort."])
    _epub(folder / "book.epub")
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    (folder / ".hidden").write_text("not for indexing")
    (folder / "empty.txt").write_text("  \n")
    (folder / "loop").symlink_to(folder / "loop")
    (folder / "dangling").symlink_to(folder / "nowhere")
    (folder / "sub").mkdir()
    (folder / "sub" / "back").symlink_to(folder)
    (folder / "odd\nname.txt").write_text("A file whose name has a newline in it.")
    return {}


def test_every_file_is_accounted_for_in_text_and_json(db_url, cli, tmp_path, session, embedder):
    folder = tmp_path / "doc"
    _debian_like(folder)
    result = cli("ingest", folder, "--collection", "debian", "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["written"] == 9  # README COPYING changelog.gz NEWS.md.gz guide.xhtml index.html manual.docx book.epub odd-name
    assert report["skipped"]["by_reason"] == {"binary": 1, "empty": 1, "hidden": 1, "symlink loop": 1}
    assert report["failed"]["by_reason"] == {"broken symlink": 1, "symlink loop": 1}
    by_path = {Path(p["path"]).name: (p["status"], p["reason"]) for p in report["problems"]}
    assert by_path == {
        ".hidden": ("skipped", "hidden"), "logo.png": ("skipped", "binary"), "loop": ("failed", "symlink loop"),
        "dangling": ("failed", "broken symlink"), "back": ("skipped", "symlink loop"), "empty.txt": ("skipped", "empty"),
    }
    docs = {
        Path(r.external_id).name: r
        for r in session.execute(sa.text("SELECT external_id, title, text, d.metadata FROM documents d "
                                         "JOIN chunks c ON c.document_id = d.id ORDER BY c.ordinal"))
    }
    assert "très chaud" in docs["COPYING"].text and docs["COPYING"].metadata["encoding"] == "cp1252"
    assert docs["guide.xhtml"].title == "Guide à part" and "Voilà: très utile." in docs["guide.xhtml"].text
    assert docs["index.html"].text == "Café “quoted”" and docs["index.html"].metadata["encoding"] == "cp1252"
    assert "Fix the widget sorter." in docs["changelog.gz"].text and docs["changelog.gz"].title == "changelog"
    assert docs["NEWS.md.gz"].title == "News"
    assert docs["manual.docx"].title == "Manual" and "Then run frob --sort." in docs["manual.docx"].text
    assert "cell one | cell two" in docs["manual.docx"].text
    assert docs["book.epub"].title == "A Small Book"
    assert "lighthouses" in docs["book.epub"].text and "tides" in docs["book.epub"].text
    assert "encoding" not in docs["README"].metadata  # UTF-8 is the default, not recorded
    assert docs["odd\nname.txt"].text == "A file whose name has a newline in it."

    human = cli("ingest", folder, "--collection", "debian")
    assert human.exit_code == 0
    lines = human.stderr.strip().splitlines()
    assert lines[-1].startswith(
        "debian: 0 written, 9 unchanged, skipped 4 (binary 1, empty 1, hidden 1, symlink loop 1), "
        "failed 2 (broken symlink 1, symlink loop 1); 0 chunks in"
    )
    assert any("skipped (binary):" in line and "logo.png: binary file, not text" in line for line in lines)
    assert not any("Token indices sequence length" in line for line in lines)


def test_zip_bombs_and_oversized_files_fail_with_their_reason(db_url, cli, tmp_path, embedder):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bomb.txt.gz").write_bytes(gzip.compress(b"\0" * 2_000_000))
    (folder / "huge.txt").write_text("word " * 50_000)
    (folder / "broken.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (folder / "ok.txt").write_text("A small and fine text file.")
    bomb_docx = folder / "bomb.docx"
    import zipfile

    with zipfile.ZipFile(bomb_docx, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", "<w:document/>" + " " * 2_000_000)
    result = cli("ingest", folder, "--collection", "c", "--max-bytes", "100000", "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["written"] == 1
    assert report["failed"]["by_reason"] == {"bad gzip": 1, "inflates too large": 2, "too large": 1}
    details = {Path(p["path"]).name: p["detail"] for p in report["problems"]}
    assert "inflates to more than the 0.1 MB limit" in details["bomb.txt.gz"]
    assert "over the 0.1 MB limit" in details["huge.txt"] and "--max-bytes" in details["huge.txt"]


def test_unreadable_file_is_reported_and_the_rest_ingested(db_url, cli, tmp_path, embedder, monkeypatch):
    import ingest.loaders as loaders

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "secret.txt").write_text("You cannot read me.")
    (folder / "public.txt").write_text("Anyone can read me.")
    real_open = loaders._open

    def refusing(path):  # as root, chmod 000 would not stop us: refuse at the one place files are opened
        if Path(path).name == "secret.txt":
            raise PermissionError(13, "Permission denied")
        return real_open(path)

    monkeypatch.setattr(loaders, "_open", refusing)
    report = cli("ingest", folder, "--collection", "c", "--json").json()
    assert report["written"] == 1 and report["failed"]["by_reason"] == {"unreadable": 1}
    assert report["problems"][0]["detail"].endswith("secret.txt: cannot read (Permission denied)")


def test_no_tokenizer_warning_for_long_sentences(embedder, capfd):
    from ingest.chunking import Chunker

    chunks = Chunker(embedder.tokenizer, embedder.max_seq_length).chunk("word " * 3000)
    assert len(chunks) > 5
    assert "Token indices sequence length" not in capfd.readouterr().err


def test_a_huge_single_line_is_chunked_in_bounded_windows(embedder):
    from ingest.chunking import _WINDOW_CHARS, Chunker, _windows

    line = "alpha beta gamma delta " * 20_000  # 460,000 characters, no sentence end
    windows = _windows(line.strip())
    assert len(windows) > 20 and max(len(w) for w in windows) <= _WINDOW_CHARS
    assert " ".join(windows) == line.strip()  # cut at spaces: nothing lost, nothing split mid-word
    chunks = Chunker(embedder.tokenizer, embedder.max_seq_length).chunk(line)
    limit = embedder.max_seq_length - 2
    assert all(c.token_count <= limit for c in chunks)


@pytest.fixture
def small_streams(monkeypatch):
    """Stream anything over 20 kB in 4 kB segments, written 8 chunks at a time: the large-file
    path at test size (the 50 MB figure is in bench/ingest_large.py)."""
    import ingest.loaders as loaders

    monkeypatch.setattr(loaders, "STREAM_BYTES", 20_000)
    monkeypatch.setattr(loaders, "SEGMENT_CHARS", 4_000)


def test_large_single_line_file_commits_slices_and_resumes_where_it_stopped(db_url, session, tmp_path, tiny_model,
                                                                            small_streams, monkeypatch):
    import ingest.pipeline as pipeline
    from genloom.errors import JobInterrupted
    from genloom.retrieval.search import search
    from ingest.chunking import ChunkConfig
    from ingest.pipeline import IngestOptions, ingest

    monkeypatch.setattr(pipeline, "BM25_SLICE", 5)  # several BM25 statements for one document

    words = [f"token{i % 997}" for i in range(12_000)]
    words[6000] = "needleword"
    path = tmp_path / "one-line.txt"
    path.write_text(" ".join(words))  # ~110 kB, one line
    seen = []

    def chunks(status):  # of the shared ProgressFn's status: "N chunks embedded · ..."
        m = re.match(r"([\d,]+) chunks embedded", status)
        return int(m[1].replace(",", "")) if m else 0

    def stop_at(n):
        def progress(task, done, total, status):
            seen.append(chunks(status))
            if seen[-1] >= n:
                raise KeyboardInterrupt
        return progress

    def texts(collection):
        return session.scalars(sa.text(
            "SELECT c.text FROM chunks c JOIN documents d ON d.id = c.document_id JOIN collections k "
            "ON k.id = d.collection_id WHERE k.name = :k AND d.superseded_at IS NULL ORDER BY c.ordinal"),
            {"k": collection}).all()

    # The tiny random model: eight ingests of the file test genloom's own work, not MiniLM's.
    options = IngestOptions(collection="c", stream_batch_chunks=8, embedding_model=str(tiny_model))
    # The run says what it kept: two slices of the document, not current yet.
    with pytest.raises(JobInterrupted, match="committed: documents 0, chunks 0, chunks of an unfinished large document 16"):
        ingest([path], options, progress=stop_at(16))
    assert seen[-1] == 16  # progress moved inside the document
    row = session.execute(sa.text("SELECT incomplete, superseded_at IS NOT NULL AS hidden FROM documents")).one()
    assert row.incomplete and row.hidden
    assert session.scalar(sa.text("SELECT count(*) FROM chunks")) == 16
    assert session.scalar(sa.text("SELECT n_chunks FROM retrieval_collection_stats")) == 0  # BM25 has none of it
    assert search(session, "token5", collection="c", mode="hybrid", k=3) == []
    session.commit()

    seen.clear()
    result = ingest([path], options, progress=lambda task, done, total, status: seen.append(chunks(status)))
    assert (result.documents, result.resumed, result.unchanged) == (1, 1, 0) and result.chunks > 24
    assert min(c for c in seen if c) == 24  # went on from chunk 16: the next slice, not the first
    clean = ingest([path], dataclasses.replace(options, collection="clean"))
    assert texts("c") == texts("clean") and len(texts("c")) == result.chunks == clean.chunks
    ids = session.execute(sa.text("SELECT count(*), bool_or(incomplete) FROM documents d JOIN collections k "
                                  "ON k.id = d.collection_id WHERE k.name = 'c'")).one()
    assert tuple(ids) == (1, False)  # the incomplete row became the current version
    ordinals = session.scalars(sa.text("SELECT ordinal FROM chunks c JOIN documents d ON d.id = c.document_id "
                                       "JOIN collections k ON k.id = d.collection_id WHERE k.name = 'c' ORDER BY 1")).all()
    assert ordinals == list(range(result.chunks))
    stats = dict(session.execute(sa.text("SELECT k.name, s.n_chunks FROM retrieval_collection_stats s "
                                         "JOIN collections k ON k.id = s.collection_id")).all())
    assert stats == {"c": result.chunks, "clean": result.chunks}
    df = dict(session.execute(sa.text("SELECT term, sum(df) FROM retrieval_term_stats WHERE df > 0 GROUP BY term")).all())
    assert df == dict(session.execute(sa.text("SELECT term, count(*) FROM retrieval_postings WHERE current GROUP BY term")).all())
    hits = search(session, "needleword", collection="c", mode="bm25", k=1)
    assert hits and "needleword" in hits[0].text
    again = ingest([path], options)
    assert (again.documents, again.unchanged) == (0, 1)
    path.write_text(" ".join(words[:8000]))
    changed = ingest([path], options)
    assert (changed.documents, changed.new_versions) == (1, 1)
    session.commit()
    n = session.scalar(sa.text("SELECT s.n_chunks FROM retrieval_collection_stats s JOIN collections k "
                               "ON k.id = s.collection_id WHERE k.name = 'c'"))
    assert n == changed.chunks  # the old version left the statistics

    # An interrupted document is resumed only as this run would cut it: other chunk settings,
    # or other content, start it afresh.
    with pytest.raises(JobInterrupted):
        ingest([path], dataclasses.replace(options, collection="d"), progress=stop_at(8))
    other = dataclasses.replace(options, collection="d", chunking=ChunkConfig(max_tokens=64))
    fresh = ingest([path], other)
    assert (fresh.documents, fresh.resumed) == (1, 0)
    ingest([path], dataclasses.replace(other, collection="d-clean"))
    assert texts("d") == texts("d-clean")
    with pytest.raises(JobInterrupted):
        ingest([path], dataclasses.replace(options, collection="e"), progress=stop_at(8))
    path.write_text(" ".join(words[:9000]))
    fresh = ingest([path], dataclasses.replace(options, collection="e"))
    assert (fresh.documents, fresh.resumed) == (1, 0)
    assert session.scalar(sa.text("SELECT count(*) FROM documents WHERE incomplete")) == 0


def test_sync_retires_documents_whose_files_are_gone(db_url, cli, tmp_path, session, embedder):
    from genloom.retrieval.search import search

    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in {"a.txt": "Apples grow on trees.", "b.txt": "Bananas are yellow.", "c.txt": "Cherries are red."}.items():
        (folder / name).write_text(text)
    elsewhere = tmp_path / "other.txt"
    elsewhere.write_text("Bananas from elsewhere are not under the synced folder.")
    assert cli("ingest", folder, elsewhere, "--collection", "c", "--json").exit_code == 0
    (folder / "b.txt").unlink()
    plain = cli("ingest", folder, "--collection", "c", "--json").json()
    assert plain["retired"] == 0  # without --sync nothing is retired
    synced = cli("ingest", folder, "--collection", "c", "--sync", "--json")
    assert synced.exit_code == 0, synced.stderr
    report = synced.json()
    assert (report["written"], report["unchanged"], report["retired"]) == (0, 2, 1)
    assert [Path(p).name for p in report["retired_documents"]] == ["b.txt"]
    hits = search(session, "bananas", collection="c", mode="bm25", k=5)
    assert [Path(h.doc_id).name for h in hits] == ["other.txt"]  # b.txt is out; other.txt was not synced
    row = session.execute(sa.text(
        "SELECT retired_at IS NOT NULL AS retired, retired_by_run_id FROM documents WHERE external_id LIKE '%b.txt'")).one()
    assert row.retired and row.retired_by_run_id == report["run_id"]
    current_chunks = session.scalar(sa.text(
        "SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.superseded_at IS NULL"))
    assert session.scalar(sa.text("SELECT n_chunks FROM retrieval_collection_stats")) == current_chunks == 3
    summary = session.scalar(sa.text("SELECT summary FROM runs WHERE id = :i"), {"i": report["run_id"]})
    assert summary["retired"] == 1 and [Path(p).name for p in summary["retired_documents"]] == ["b.txt"]
    (folder / "b.txt").write_text("Bananas are back.")
    back = cli("ingest", folder, "--collection", "c", "--sync", "--json").json()
    assert (back["written"], back["retired"]) == (1, 0)
    assert session.scalar(sa.text("SELECT max(version) FROM documents WHERE external_id LIKE '%b.txt'")) == 2
    human = cli("ingest", folder / "a.txt", "--collection", "c", "--sync")
    assert human.exit_code == 1 and human.stderr == "error: --sync mirrors folders: give at least one folder\n"


def test_progress_has_final_totals_after_discovery_and_counts_chunks(db_url, tmp_path, embedder):
    from ingest.pipeline import IngestOptions, ingest

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(6):
        (folder / f"doc{i}.txt").write_text(" ".join(f"Sentence {j} of document {i}." for j in range(30)))
    (folder / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    snapshots = []

    def record(task, done, total, status):  # the shared genloom.progress.ProgressFn: bytes, counts in the status
        m = re.match(r"([\d,]+) chunks embedded · ([\d.]+) chunks/s · (\d+)/(\d+) files", status)
        snapshots.append((total, done, m and int(m[1].replace(",", "")), m and float(m[2]), m and int(m[4])))

    result = ingest([folder], IngestOptions(collection="c", batch_documents=2), progress=record)
    after = [s for s in snapshots if s[0] is not None]
    assert after and {s[4] for s in after} == {7} and len({s[0] for s in after}) == 1  # totals never grow
    assert [s[2] for s in after] == sorted(s[2] for s in after) and after[-1][2] == result.chunks
    assert after[-1][1] == after[-1][0]  # every byte accounted for at the end
    assert any(0 < s[1] < s[0] for s in after) and after[-1][3] > 0  # an ETA before the end; a rate


@pytest.mark.parametrize(
    "data, expected",
    [
        (FRENCH.encode("latin-1"), "cp1252"),  # charset-normalizer alone says cp1257 ('trčs')
        (b"Version 22.1: translations (thanks to Marc L\xe9ger)\n" + b"- fixed the build on arm64\n" * 200, "cp1252"),
        (("Привет, как дела? Это тестовый документ о базах данных. " * 3).encode("cp1251"), "cp1251"),
        (("日本語のテキストです。検索とデータベースについて。" * 3).encode("shift_jis"), "cp932"),
        (bytes(range(256)) * 8, None),
    ],
    ids=["latin1-french", "one-accent-in-english", "cp1251-russian", "shift-jis", "noise"],
)
def test_detect_encoding(data, expected):
    from ingest.loaders import detect_encoding

    assert detect_encoding(data) == expected


def test_a_large_file_bad_past_its_first_megabyte_leaves_nothing(db_url, session, tmp_path, tiny_model, small_streams):
    from ingest.pipeline import IngestOptions, ingest

    # Slices are committed as the file streams; the bad byte comes after some of them.
    path = tmp_path / "bad-late.txt"
    path.write_bytes(b" ".join(b"word%d" % (i % 500) for i in range(200_000)) + b" caf\xe9 " + b"more " * 1000)
    result = ingest([path], IngestOptions(collection="c", stream_batch_chunks=8, embedding_model=str(tiny_model)))
    assert (result.documents, dict(result.failed)) == (0, {"undecodable": 1})
    assert "not UTF-8 past its first megabyte" in result.problems[0].detail
    assert session.scalar(sa.text("SELECT count(*) FROM documents")) == 0
    assert session.scalar(sa.text("SELECT count(*) FROM chunks")) == 0
