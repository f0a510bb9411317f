"""Progress that moves: during a batch, the count, rate and ETA advance chunk by chunk, and with
stderr not a terminal the CLI prints a plain progress line every few seconds."""

from __future__ import annotations

import re


def _folder(tmp_path, n=6):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(n):
        (folder / f"d{i}.txt").write_text("\n\n".join(f"Paragraph {j} of file {i} about topic {j * i}." for j in range(8)))
    return folder


def chunks_in(status):
    """The chunk count of an ingest status ("1,234 chunks embedded · ..."); None while discovering."""
    m = re.match(r"([\d,]+) chunks embedded", status)
    return int(m[1].replace(",", "")) if m else None


def test_progress_moves_by_chunks_inside_one_batch(db_url, tmp_path, tiny_model):
    from ingest.chunking import ChunkConfig
    from ingest.pipeline import IngestOptions, ingest

    seen = []

    def progress(task, done, total, status):  # the shared genloom.progress.ProgressFn
        assert task == "ingest many"
        if total is not None:
            seen.append((done, total, chunks_in(status)))

    options = IngestOptions(collection="many", embedding_model=str(tiny_model), embed_batch_size=1,
                            chunking=ChunkConfig(max_tokens=16, overlap=0))
    result = ingest([_folder(tmp_path)], options, progress=progress)
    assert result.documents == 6 and result.chunks > 8
    # One batch of six documents, nothing written until all of it is embedded, yet the bytes done
    # (the batch counted by its share of chunks embedded, so an ETA is known) and the chunks
    # embedded moved inside it.
    inside = [s for s in seen if 0 < s[0] < s[1]]
    assert len({s[0] for s in inside}) >= 2, seen
    assert [s[2] for s in inside] == sorted(s[2] for s in inside) and inside[0][2] > 0
    assert seen[-1][0] == seen[-1][1] and seen[-1][2] == result.chunks


def test_piped_stderr_gets_plain_progress_lines(db_url, cli, tmp_path, tiny_model, monkeypatch):
    import genloom.cli.ingest as ingest_cli

    monkeypatch.setattr(ingest_cli, "PLAIN_PROGRESS_EVERY_S", 0.0)
    result = cli("ingest", _folder(tmp_path), "-c", "many", "--model", tiny_model)
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("ingest many: ")]
    assert lines, result.stderr
    assert re.match(r"ingest many: \d+ chunks embedded · [\d.]+ chunks/s · \d+/6 files", lines[-1])
    assert any(re.search(r" · ETA \d+[hms]", line) for line in lines), lines  # from the bytes done so far
    assert "━" not in result.stderr  # no half-drawn bar in a log
