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


def test_progress_moves_by_chunks_inside_one_batch(db_url, tmp_path, tiny_model):
    from ingest.chunking import ChunkConfig
    from ingest.pipeline import IngestOptions, ingest

    seen = []

    def progress(p):
        if not p.discovering:
            seen.append((p.chunks, p.embedding_done, p.embedding_total, p.chunks_embedded, p.eta_seconds()))

    options = IngestOptions(collection="many", embedding_model=str(tiny_model), embed_batch_size=1,
                            chunking=ChunkConfig(max_tokens=16, overlap=0))
    result = ingest([_folder(tmp_path)], options, progress=progress)
    assert result.documents == 6 and result.chunks > 8
    # One batch of six documents, yet progress reported chunks embedded before anything was written,
    # and the ETA was known before the batch was done.
    inside = [s for s in seen if s[0] == 0 and 0 < s[1] < s[2]]
    assert len(inside) >= 2, seen
    assert [s[3] for s in inside] == sorted(s[3] for s in inside) and inside[0][4] is not None


def test_piped_stderr_gets_plain_progress_lines(db_url, cli, tmp_path, tiny_model, monkeypatch):
    import genloom.cli.ingest as ingest_cli

    monkeypatch.setattr(ingest_cli, "PLAIN_PROGRESS_EVERY_S", 0.0)
    result = cli("ingest", _folder(tmp_path), "-c", "many", "--model", tiny_model)
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("ingest many: ")]
    assert lines, result.stderr
    assert re.match(r"ingest many: \d+ chunks embedded · [\d.]+ chunks/s · \d+/6 files", lines[-1])
    assert "━" not in result.stderr  # no half-drawn bar in a log
