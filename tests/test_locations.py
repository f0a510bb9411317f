"""Locations: each chunk knows its page, heading path and offsets; citations print them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa


@pytest.fixture(scope="module")
def embedder():
    from genloom.embeddings import get_embedder

    return get_embedder()


def _pdf(pages: list[str]) -> bytes:
    """A PDF with one line of text per page (hand-built: the xref offsets are exact)."""
    n = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode()]
    font = 3 + 2 * n
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
                       f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
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


MANUAL = """# Frobnicator manual

Intro text about the tool.

## Installation

Install it with the package manager.

### Verify

Run frob --version and check that it prints the zyxwidget banner.

## Usage

Sort widgets with frob --sort.
"""


def test_chunks_record_offsets_pages_and_headings(db_url, session, tmp_path, embedder):
    from ingest.chunking import ChunkConfig
    from ingest.pipeline import IngestOptions, ingest

    (tmp_path / "manual.md").write_text(MANUAL)
    (tmp_path / "guide.pdf").write_bytes(_pdf(["Page one talks about setup.", "Page two explains the quokkaflux."]))
    (tmp_path / "page.html").write_text(
        "<html><body><h1>Top</h1><p>Hello.</p><h2>Details</h2><p>The marmoset fact.</p></body></html>")
    ingest([tmp_path], IngestOptions(collection="c", chunking=ChunkConfig(max_tokens=12, overlap=0)))
    rows = session.execute(sa.text(
        "SELECT d.external_id, c.text, c.metadata FROM chunks c JOIN documents d ON d.id = c.document_id ORDER BY d.id, c.ordinal"
    )).all()
    by_text = {r.text: r.metadata for r in rows}
    verify = next(m for t, m in by_text.items() if "zyxwidget" in t)
    assert verify["heading"] == ["Installation", "Verify"]
    usage = next(m for t, m in by_text.items() if "frob --sort" in t)
    assert usage["heading"] == ["Usage"]
    assert next(m for t, m in by_text.items() if "quokkaflux" in t)["page"] == 2
    assert next(m for t, m in by_text.items() if "setup" in t)["page"] == 1
    assert next(m for t, m in by_text.items() if "marmoset" in t)["heading"] == ["Top", "Details"]
    # Offsets point into the document's text: the chunk's first words are there.
    for row in rows:
        meta = row.metadata
        assert 0 <= meta["start"] < meta["end"]
    intro = next(m for t, m in by_text.items() if t.startswith("Intro text"))
    assert intro["start"] == 0  # the leading '# Title' became the title, so the text starts here


def test_citations_print_title_page_and_heading(db_url, cli, tmp_path, embedder):
    (tmp_path / "manual.md").write_text(MANUAL)
    (tmp_path / "guide.pdf").write_bytes(_pdf(["Page one talks about setup.", "Page two explains the quokkaflux."]))
    assert cli("ingest", tmp_path, "--collection", "c", "--chunk-tokens", "16", "--chunk-overlap", "0").exit_code == 0
    hits = cli("search", "quokkaflux", "--collection", "c", "--mode", "bm25", "-k", "1", "--json")
    assert hits.exit_code == 0, hits
    hits = hits.json()
    assert (hits[0]["page"], hits[0]["location"]) == (2, "guide · page 2")
    hits = cli("search", "zyxwidget banner", "--collection", "c", "--mode", "bm25", "-k", "1", "--json").json()
    assert hits[0]["heading"] == ["Installation", "Verify"]
    assert hits[0]["location"] == "Frobnicator manual · §Installation › Verify"

    asked = cli("ask", "zyxwidget banner", "--collection", "c", "--model", "extractive", "-k", "1", "--no-stream")
    assert asked.exit_code == 0, asked.stderr
    assert "[1] Frobnicator manual · §Installation › Verify" in asked.stdout
    answer = cli("ask", "quokkaflux", "--collection", "c", "--model", "extractive", "-k", "1", "--json")
    assert answer.exit_code == 0, answer
    answer = answer.json()
    assert answer["citations"][0]["page"] == 2 and answer["citations"][0]["location"] == "guide · page 2"
    shown = cli("generations", "show", str(answer["generation_id"]), "--json").json()
    assert shown["sources"][0]["location"] == "guide · page 2" and shown["sources"][0]["page"] == 2
    table = cli("generations", "show", str(answer["generation_id"]))
    assert "guide · page 2" in table.stdout


def test_format_location():
    from genloom.retrieval.locations import format_location

    assert format_location("Manual", "/x/m.md", {"page": 4, "heading": ["Installation", "Verify"]}) == (
        "Manual · page 4 · §Installation › Verify")
    assert format_location(None, "/x/guide.pdf", {"page": 2, "page_range": [2, 3]}) == "guide.pdf · pages 2–3"
    assert format_location("Team notes", "n.docx", {"heading": ["Team notes", "Verify"]}) == "Team notes · §Verify"
    assert format_location("Team notes", "n.docx", {"heading": ["Team notes"]}) == "Team notes"
    assert format_location(None, None, None) == "untitled"


def test_markdown_comments_in_code_blocks_are_not_headings():
    from ingest.loaders import markdown_headings

    text = "## Install\n\n```bash\n# the first run takes a while\npip install x\n```\n\n### Verify\n~~~\n# not this\n~~~\n"
    assert markdown_headings(text) == [(2, "Install"), (3, "Verify")]
