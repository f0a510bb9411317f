"""Every migration upgrades a database that holds data, and keeps that data.

From an empty database the test walks the revisions one at a time, base to head. After each
upgrade it inserts rows into the tables that revision created (so every later migration runs
over non-empty tables, as it does on a user's store), and after every step it checks that the
rows inserted so far are all still there, unchanged, in the columns they were written with.
Upgrading from any earlier revision R is the tail R → head of this walk, run here with data.
"""

from __future__ import annotations

import sqlalchemy as sa

# Rows for the tables a revision creates, in SQL valid at that revision; then what to compare.
SEED = {
    "0001": [
        "INSERT INTO embedding_models (name, dim) VALUES ('m3', 3)",
        "INSERT INTO collections (name, embedding_model_id) SELECT 'c', id FROM embedding_models",
        "INSERT INTO documents (collection_id, external_id, sha256, title) "
        "SELECT id, 'doc' || n, repeat(n::text, 64), 'Title ' || n FROM collections, generate_series(1, 3) n",
        "INSERT INTO chunks (document_id, ordinal, text, token_count) "
        "SELECT d.id, o, 'chunk ' || o || ' of ' || d.external_id || ' about retrieval and fusion', 8 "
        "FROM documents d, generate_series(0, 1) o",
        "INSERT INTO embeddings (chunk_id, embedding_model_id, embedding) "
        "SELECT c.id, m.id, '[1,0,0]' FROM chunks c, embedding_models m",
        "INSERT INTO sessions DEFAULT VALUES",
        "INSERT INTO prompts (session_id, text) SELECT id, 'what is fusion?' FROM sessions",
        "INSERT INTO generations (prompt_id, model_name, output) SELECT id, 'extractive', 'Fusion [1].' FROM prompts",
        "INSERT INTO generation_sources (generation_id, rank, chunk_id) "
        "SELECT g.id, 1, (SELECT min(id) FROM chunks) FROM generations g",
        "INSERT INTO feedback (generation_id, score) SELECT id, 1 FROM generations",
        "INSERT INTO items (sha256, modality, payload, label, text) "
        "SELECT repeat(chr(96 + n), 64), 'text', convert_to('item ' || n, 'UTF8'), 'l' || (n % 2), 'item ' || n "
        "FROM generate_series(1, 4) n",
        "INSERT INTO datasets (name) VALUES ('d')",
        "INSERT INTO dataset_versions (dataset_id, version, item_count) SELECT id, 1, 4 FROM datasets",
        "INSERT INTO dataset_members (version_id, item_id, split) SELECT v.id, i.id, 'train' FROM dataset_versions v, items i",
        "UPDATE dataset_versions SET sealed = true",
        "INSERT INTO runs (kind, status, params) VALUES ('train', 'succeeded', '{\"name\": \"m\", \"arch\": \"vae\"}')",
        "INSERT INTO metrics (run_id, step, name, value) SELECT id, s, 'loss', 1.0 / s FROM runs, generate_series(1, 3) s",
        "INSERT INTO models (name, version, architecture, checkpoint, sha256, size_bytes, run_id) "
        "SELECT 'm', 1, 'vae', '\\x00'::bytea, repeat('0', 64), 1, id FROM runs",
        "INSERT INTO run_checkpoints (run_id, step, payload, sha256, size_bytes) "
        "SELECT id, 2, '\\x01'::bytea, repeat('1', 64), 1 FROM runs",
    ],
    "0006": [
        "INSERT INTO dedup_decisions (run_id, input_version_id, dropped_item_id, kept_item_id, method, similarity) "
        "SELECT (SELECT min(id) FROM runs), (SELECT min(id) FROM dataset_versions), "
        "(SELECT max(id) FROM items), (SELECT min(id) FROM items), 'exact', 1.0",
    ],
    "0008": [
        "INSERT INTO dataset_shards (version_id, split, shard_no, item_count, shape, item_ids, labels, payload) "
        "SELECT v.id, 'train', 0, 4, ARRAY[1, 2, 2], ARRAY(SELECT id FROM items ORDER BY id), "
        "ARRAY['l1', 'l0', 'l1', 'l0'], '\\x0102'::bytea FROM dataset_versions v",
    ],
}
# (table, columns as seeded): compared as an ordered list of rows after every later step.
KEPT = {
    "0001": [
        ("documents", "external_id, sha256, title"), ("chunks", "document_id, ordinal, text, token_count"),
        ("embeddings", "chunk_id, embedding::text"), ("prompts", "text"), ("generations", "prompt_id, model_name, output"),
        ("generation_sources", "generation_id, rank, chunk_id"), ("feedback", "generation_id, score"),
        ("items", "sha256, modality, payload, label, text"), ("dataset_members", "version_id, item_id, split"),
        ("dataset_versions", "dataset_id, version, item_count, sealed"), ("metrics", "run_id, step, name, value"),
        ("models", "name, version, architecture, sha256"), ("run_checkpoints", "run_id, step, sha256"),
        ("runs", "kind, status, params"),
    ],
    "0006": [("dedup_decisions", "dropped_item_id, kept_item_id, method, similarity")],
    "0008": [("dataset_shards", "version_id, split, shard_no, item_ids, labels, payload")],
}


def _snapshot(conn, tables):
    return {table: conn.execute(sa.text(f"SELECT {cols} FROM {table} ORDER BY {cols.split(',')[0]}, 1")).all()
            for table, cols in tables}


def test_every_migration_upgrades_a_database_holding_data(engine):
    from alembic.script import ScriptDirectory

    from genloom.db import migrate

    revisions = [s.revision for s in ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()][::-1]
    assert revisions[0] == "0001" and len(revisions) >= 10
    migrate.downgrade(engine, "base")
    kept: list[tuple[str, str]] = []
    expected: dict = {}
    for revision in revisions:
        migrate.upgrade(engine, revision)
        with engine.connect() as conn:
            assert _snapshot(conn, kept) == expected, f"rows changed or lost by migration {revision}"
        if revision in SEED:
            with engine.begin() as conn:
                for statement in SEED[revision]:
                    conn.execute(sa.text(statement))
            kept += KEPT[revision]
            with engine.connect() as conn:
                expected = _snapshot(conn, kept)
            assert all(expected[table] for table, _ in kept)
    assert migrate.current_revision(engine) == migrate.head_revision()
    with engine.connect() as conn:
        # What the later revisions derive from the old rows: BM25 postings and statistics for the
        # chunks (0002), and each member's label in a version (0009) as the item's own.
        labels = conn.execute(sa.text("SELECT label FROM v_dataset_items ORDER BY item_id")).scalars().all()
        assert labels == ["l1", "l0", "l1", "l0"]
        _bm25_of_old_chunks.append(conn.execute(sa.text(BM25_EXACT)).one())


_bm25_of_old_chunks: list = []


BM25_EXACT = """
    SELECT (SELECT n_chunks FROM retrieval_collection_stats),
           (SELECT count(DISTINCT chunk_id) FROM retrieval_postings),
           (SELECT count(*) FROM retrieval_collection_stats s
             WHERE s.total_length <> (SELECT coalesce(sum(length), 0) FROM retrieval_chunks r
                                      WHERE r.collection_id = s.collection_id AND r.current)),
           (SELECT count(*) FROM retrieval_term_stats t
             WHERE t.df <> (SELECT count(*) FROM retrieval_postings p
                            WHERE p.collection_id = t.collection_id AND p.term = t.term AND p.current))
"""


def test_chunks_stored_before_0002_get_bm25_postings():
    # 0014 indexes the chunks stored before 0002 created the BM25 tables.
    assert _bm25_of_old_chunks, "runs after test_every_migration_upgrades_a_database_holding_data"
    assert tuple(_bm25_of_old_chunks[0]) == (6, 6, 0, 0)  # 3 documents × 2 chunks, each with postings; exact stats


def _bm25_rows(conn) -> dict:
    return {table: sorted(conn.execute(sa.text(f"SELECT {cols} FROM {table}")).all()) for table, cols in BM25_TABLES}


BM25_TABLES = [
    ("retrieval_chunks", "chunk_id, collection_id, document_id, length, current"),
    ("retrieval_postings", "chunk_id, term, collection_id, tf, chunk_length, current"),
    ("retrieval_term_stats", "collection_id, term, df"),
    ("retrieval_collection_stats", "collection_id, n_chunks, total_length"),
]


def test_bm25_backfill_rebuilds_what_ingest_wrote_and_is_a_no_op_when_indexed(engine, cli, tmp_path):
    from genloom.db import migrate

    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"d{i}.txt").write_text(f"Note {i} about retrieval and fusion. " * (i + 2))
    assert cli("ingest", folder, "--collection", "c").exit_code == 0
    (folder / "d0.txt").write_text("A new version of note zero, about ranking. " * 3)  # supersedes a version
    assert cli("ingest", folder, "--collection", "c").exit_code == 0
    with engine.connect() as conn:
        written = _bm25_rows(conn)
        assert conn.execute(sa.text("SELECT count(*) FROM documents WHERE superseded_at IS NOT NULL")).scalar() == 1
    assert all(written.values())

    # Every chunk indexed: 0014 writes nothing.
    migrate.downgrade(engine, "0013")
    migrate.upgrade(engine, "head")
    with engine.connect() as conn:
        assert _bm25_rows(conn) == written

    # As a store from before 0002 holds it: no BM25 rows and no statistics row. 0014 rebuilds
    # exactly what ingest wrote, superseded version included (its chunks indexed, not current).
    with engine.begin() as conn:
        for table, _ in BM25_TABLES:
            conn.execute(sa.text(f"DELETE FROM {table}"))
    migrate.downgrade(engine, "0013")
    migrate.upgrade(engine, "head")
    with engine.connect() as conn:
        rebuilt = _bm25_rows(conn)
    assert rebuilt == written
