"""A second embedding model for a collection: resumable `genloom embed`, its own HNSW index, chosen per search."""

from __future__ import annotations

import sqlalchemy as sa


def test_embed_adds_a_second_model_and_search_chooses(db_url, cli, tmp_path, session, tiny_model):
    from genloom.retrieval.vector import hnsw_index_name

    folder = tmp_path / "docs"
    folder.mkdir()
    for i, text in enumerate(["Tea is steeped in hot water.", "Rust prevents data races.", "Owls hunt at night."]):
        (folder / f"d{i}.txt").write_text(text)
    assert cli("ingest", folder, "--collection", "c").exit_code == 0
    first = cli("embed", "--collection", "c", "--model", tiny_model, "--json")
    assert first.exit_code == 0, first.stderr
    assert (first.json()["embedded"], first.json()["already"]) == (3, 0)
    again = cli("embed", "--collection", "c", "--model", tiny_model, "--json").json()
    assert (again["embedded"], again["already"]) == (0, 3)  # resumable: nothing left to do
    model_id = session.scalar(sa.text("SELECT id FROM embedding_models WHERE name = :n"), {"n": str(tiny_model.resolve())})
    assert session.scalar(sa.text("SELECT count(*) FROM embeddings WHERE embedding_model_id = :m"), {"m": model_id}) == 3
    assert session.scalar(sa.text("SELECT 1 FROM pg_indexes WHERE indexname = :n"), {"n": hnsw_index_name(model_id)}) == 1

    default = cli("search", "owls", "--collection", "c", "--mode", "vector", "--json").json()
    second = cli("search", "owls", "--collection", "c", "--mode", "vector", "--embedding-model", tiny_model, "--json").json()
    assert len(default) == len(second) == 3
    assert [h["vector_score"] for h in default] != [h["vector_score"] for h in second]  # another model's cosines
    (folder / "d3.txt").write_text("Bees make honey.")  # ingest later: the second model catches up on re-run
    assert cli("ingest", folder, "--collection", "c").exit_code == 0
    assert cli("embed", "--collection", "c", "--model", tiny_model, "--json").json()["embedded"] == 1
    asked = cli("ask", "bees", "-c", "c", "--model", "extractive", "--embedding-model", tiny_model, "--json")
    assert asked.exit_code == 0, asked.stderr

    missing = cli("search", "owls", "--collection", "c", "--embedding-model", "all-MiniLM-L12-v2")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: embedding model 'all-MiniLM-L12-v2' has no vectors")
    same = cli("embed", "--collection", "c", "--model", "all-MiniLM-L6-v2")
    assert same.exit_code == 1 and "already embedded with 'all-MiniLM-L6-v2'" in same.stderr
    nodir = cli("embed", "--collection", "c", "--model", tmp_path / "nope")
    assert nodir.exit_code == 1 and "is not a local directory" in nodir.stderr
