"""`genloom db cluster init`: Citus 14 built from the vendored source (cached), a coordinator and two
workers on Unix sockets with peer authentication, and genloom's tenancy working across the workers.

On that cluster `genloom db migrate` distributes genloom's schema (genloom.db.distribute), and
genloom works on it as on one node: ingest, BM25/vector/hybrid search (the same top 10 as one
node), ask with its log, feedback, a dataset import and a training read, two tenants isolated
(each search one task on the tenant's worker; the read-only SQL login sees only its tenant).

The 3-node test needs the Citus build: under CI=true it builds it (once; .ci/run caches
~/.cache/genloom/citus), on a developer's machine without a cached build it is skipped with
the command that builds it.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import own_database, skip_or_fail, under_ci


def test_a_missing_compiler_is_one_line_with_the_fix(cli, monkeypatch, tmp_path):
    from genloom.db import cluster

    monkeypatch.setenv("GENLOOM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv(cluster.CACHE_ENV, str(tmp_path / "cache"))  # nothing cached: a build is needed
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, gcc, clang or make here
    monkeypatch.delenv("CC", raising=False)
    if not cluster.source_tarball_available():
        skip_or_fail(f"the Citus source is absent ({cluster.DEFAULT_SOURCE})")
    result = cli("db", "cluster", "init", "--workers", "2")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: building Citus needs a C compiler and make, and none was found: install them "
        "(Debian/Ubuntu: apt-get install build-essential) or set CC\n"
    )


def test_a_missing_source_is_one_line_with_the_fix(cli, monkeypatch, tmp_path):
    from genloom.db import cluster

    monkeypatch.setenv("GENLOOM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(cluster.SOURCE_ENV, str(tmp_path / "citus-14.0.1.tar.gz"))
    result = cli("db", "cluster", "init")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: Citus source not found at {tmp_path / 'citus-14.0.1.tar.gz'}: put citus-14.0.1.tar.gz there "
        f"(../shared/vendor/) or set {cluster.SOURCE_ENV}\n"
    )


@pytest.fixture(scope="module")
def citus_cluster(tmp_path_factory, pg_server):
    """A coordinator + 2 workers made by `genloom db cluster init` in a home of its own.

    (pg_server first: the single-node results the cluster's are compared with come from it.)"""
    from genloom.cli.main import main
    from genloom.db import cluster
    from genloom.db.engine import reset_engines

    if not cluster.source_tarball_available():
        skip_or_fail(f"the Citus source is absent ({cluster.DEFAULT_SOURCE})")
    if not under_ci() and not cluster.is_built():
        pytest.skip(f"Citus is not built in {cluster.cache_root()} yet: `genloom db cluster init` builds it (~20 min)")
    home = tmp_path_factory.mktemp("citus_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOM_HOME", str(home))
        mp.delenv("DATABASE_URL", raising=False)
        reset_engines()
        assert main(["db", "cluster", "init", "--workers", "2"]) == 0
        try:
            yield home
        finally:
            reset_engines()
            cluster.stop()


def test_cluster_init_starts_a_coordinator_and_two_workers_without_trust(citus_cluster, cli):
    from genloom.db import cluster
    from genloom.db.engine import get_engine, libpq_url

    assert libpq_url() == cluster.coordinator_url()  # genloom now uses the coordinator
    with get_engine().connect() as conn:
        workers = conn.execute(sa.text("SELECT count(*) FROM citus_get_active_worker_nodes()")).scalar()
        version = conn.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'citus'")).scalar()
    assert workers == 2 and version.startswith("14.")
    for folder in cluster.nodes():
        hba = (folder / "pg_hba.conf").read_text()
        assert "trust" not in hba.split("# TYPE", 1)[1] and "host " not in hba
        assert (folder / "postgresql.conf").exists() and oct(folder.stat().st_mode)[-3:] == "700"
    status = cli("db", "status", "--json").json()
    assert [n["state"] for n in status["cluster"]] == ["running"] * 3
    assert status["schema_revision"] == status["schema_head"]


def test_tenants_are_isolated_on_the_workers_and_routed_to_their_shard(citus_cluster):
    """The two traps: a NOLOGIN genloom_app cannot reach workers, and a session SET of the tenant is
    not seen there. genloom's own session path (tenancy.apply) must work on a distributed table."""
    from genloom.db.engine import get_engine, session_scope
    from genloom.db.tenancy import use_tenant

    with get_engine().begin() as conn:
        for statement in [
            "CREATE TABLE notes (tenant text NOT NULL DEFAULT genloom_tenant(), "
            "id bigint GENERATED BY DEFAULT AS IDENTITY, body text, PRIMARY KEY (tenant, id))",
            "SELECT create_distributed_table('notes', 'tenant')",
            "ALTER TABLE notes ENABLE ROW LEVEL SECURITY",
            "ALTER TABLE notes FORCE ROW LEVEL SECURITY",
            "CREATE POLICY tenant_isolation ON notes USING (tenant = genloom_tenant()) "
            "WITH CHECK (tenant = genloom_tenant())",
            "GRANT SELECT, INSERT ON notes TO genloom_app",
        ]:
            conn.execute(sa.text(statement))
    for tenant in ("acme", "globex"):
        with use_tenant(tenant), session_scope() as session:
            for n in range(3):
                session.execute(sa.text("INSERT INTO notes (body) VALUES (:b)"), {"b": f"{tenant} {n}"})
    for tenant in ("acme", "globex"):
        with use_tenant(tenant), session_scope() as session:
            # A query over every shard (no tenant filter): each worker applies the policy with the tenant.
            who, rows, tenants = session.execute(
                sa.text("SELECT current_user, count(*), array_agg(DISTINCT tenant) FROM notes")
            ).one()
            plan = (
                session.execute(sa.text("EXPLAIN SELECT body FROM notes WHERE tenant = :t"), {"t": tenant})
                .scalars()
                .all()
            )
        assert (who, rows, tenants) == ("genloom_app", 3, [tenant])
        assert "Task Count: 1" in "\n".join(plan)  # a router query: one shard, one worker


def test_migrate_distributes_genloom_schema_by_tenant(citus_cluster, cli):
    """`genloom db migrate` on a coordinator: every table distributed by tenant in one co-location group,
    the two global tables as reference tables, and every key led by the tenant."""
    from genloom.db import distribute
    from genloom.db.engine import get_engine

    again = cli("db", "migrate", "--json")
    assert again.exit_code == 0, again.stderr
    assert again.json()["citus"]["tenant"] == [] and again.json()["citus"]["reference"] == []  # nothing left to do
    with get_engine().connect() as conn:
        placed = dict(
            conn.execute(
                sa.text(
                    "SELECT c.relname, CASE WHEN p.partmethod = 'n' THEN 'reference' ELSE "
                    "column_to_column_name(p.logicalrelid, p.partkey) || ':' || p.colocationid END "
                    "FROM pg_class c LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid "
                    "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') "
                    "AND NOT c.relispartition AND c.relname NOT IN ('alembic_version', 'notes')"
                )
            ).all()
        )
        keys_without_tenant = conn.execute(
            sa.text(
                "SELECT conrelid::regclass::text, conname FROM pg_constraint c "
                "JOIN pg_dist_partition p ON p.logicalrelid = c.conrelid AND p.partmethod = 'h' "
                "WHERE c.contype IN ('p', 'u') AND NOT EXISTS (SELECT 1 FROM unnest(c.conkey) k(n) "
                "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n WHERE a.attname = 'tenant')"
            )
        ).all()
    assert {t for t, how in placed.items() if how == "reference"} == set(distribute.REFERENCE_TABLES)
    groups = {how for t, how in placed.items() if how != "reference"}
    assert len(groups) == 1 and next(iter(groups)).startswith("tenant:"), placed  # all co-located, none local
    assert {"chunks", "embeddings", "retrieval_postings", "generations", "feedback", "items"} <= set(placed)
    assert keys_without_tenant == []


def test_genloom_ingests_searches_and_asks_through_the_coordinator(citus_cluster, cli, tmp_path):
    from genloom.db.engine import session_scope

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "owls.txt").write_text("Owls hunt at night. The barn owl hears mice under snow.")
    (folder / "fusion.txt").write_text("Reciprocal rank fusion merges BM25 and vector rankings.")
    assert cli("ingest", folder, "--collection", "c").exit_code == 0
    for mode in ("bm25", "vector", "hybrid"):
        hits = cli("search", "barn owl", "--collection", "c", "--mode", mode, "--json")
        assert hits.exit_code == 0, hits.stderr
        assert os.path.basename(hits.json()[0]["doc_id"]) == "owls.txt", mode
    answer = cli("ask", "what do owls hunt?", "--collection", "c", "--model", "extractive", "--json")
    assert answer.exit_code == 0, answer.stderr
    generation = answer.json()["generation_id"]
    assert cli("feedback", str(generation), "--score", "5").exit_code == 0
    with session_scope() as session:  # the log, its sources and the feedback, on the tenant's shard
        logged = session.execute(
            sa.text(
                "SELECT g.status, count(DISTINCT s.rank), max(f.score) FROM generations g "
                "JOIN generation_sources s ON s.generation_id = g.id AND s.tenant = g.tenant "
                "JOIN feedback f ON f.generation_id = g.id AND f.tenant = g.tenant WHERE g.id = :g GROUP BY g.status"
            ),
            {"g": generation},
        ).one()
    status, sources, score = logged
    assert (status, score) == ("ok", 5) and sources >= len(answer.json()["citations"]) >= 1


def test_a_dataset_import_and_a_training_read_on_the_cluster(citus_cluster, cli, tmp_path, monkeypatch):
    from genloom.datasets.loading import load_split

    corpus = tmp_path / "lines.txt"
    corpus.write_text("".join(f"line number {n} of the corpus\n" for n in range(12)))
    monkeypatch.setenv("GENLOOM_TENANT", "acme")  # not the default tenant: the read must find acme's rows
    out = cli("datasets", "import", "text", corpus, "--name", "lines", "--unit", "line", "--val", "0", "--test", "0", "--json")
    assert out.exit_code == 0, out.stderr
    shown = cli("datasets", "show", "lines", "--json").json()
    assert shown["items"] == 12 and shown["by_split"]["train"] == 12
    again = cli("datasets", "import", "text", corpus, "--name", "lines", "--unit", "line", "--val", "0", "--test", "0", "--json")
    assert again.exit_code == 0 and again.json()["unchanged"], again.stderr  # re-runs are safe
    from genloom.db.engine import session_scope

    with session_scope() as session:
        version_id = session.execute(sa.text("SELECT id FROM dataset_versions WHERE tenant = 'acme'")).scalar_one()
    batch = load_split(version_id, "train")
    assert sorted(batch.texts or []) == sorted(f"line number {n} of the corpus" for n in range(12))


def _search_routed(query: str, collection: str, mode: str) -> tuple[list[str], set[str]]:
    """(doc ids, the workers the search statement itself ran on), from Citus' log of remote commands."""
    from genloom.db.engine import session_scope
    from genloom.retrieval.search import search

    notes: list[tuple[str, str]] = []
    with session_scope() as session:
        raw = session.connection().connection.driver_connection
        raw.add_notice_handler(lambda d: notes.append((d.message_primary or "", d.message_detail or "")))
        session.execute(sa.text("SET LOCAL citus.log_remote_commands = on"))
        hits = search(session, query, collection=collection, mode=mode, k=10)
    ran_on = {detail.split("@", 1)[1].split(":", 1)[0] for m, detail in notes if "WITH stats AS" in m}
    return [os.path.basename(h.doc_id) for h in hits], ran_on


def test_two_tenants_are_isolated_and_routed_to_their_shard(citus_cluster, cli, tmp_path, monkeypatch):
    from genloom.db.engine import get_engine

    for tenant, text in (("acme", "Acme builds rockets for coyotes."), ("globex", "Globex sells rockets to villains.")):
        folder = tmp_path / tenant
        folder.mkdir()
        (folder / f"{tenant}.txt").write_text(text)
        monkeypatch.setenv("GENLOOM_TENANT", tenant)
        assert cli("ingest", folder, "--collection", "rockets").exit_code == 0
    with get_engine().connect() as conn:
        node_of = dict(
            conn.execute(
                sa.text(
                    "SELECT t, s.nodename FROM unnest(ARRAY['acme', 'globex']) t JOIN citus_shards s "
                    "ON s.shardid = get_shard_id_for_distribution_column('retrieval_postings', t)"
                )
            ).all()
        )
    for tenant in ("acme", "globex"):
        monkeypatch.setenv("GENLOOM_TENANT", tenant)
        for mode in ("bm25", "hybrid"):
            ids, ran_on = _search_routed("rockets", "rockets", mode)
            assert ids == [f"{tenant}.txt"], (tenant, mode)  # only its own document
            assert ran_on == {node_of[tenant]}, (tenant, mode, ran_on)  # one task, on the tenant's worker
        seen = cli("sql", "SELECT DISTINCT tenant FROM documents ORDER BY 1", "--json")  # the read-only login
        assert seen.exit_code == 0, seen.stderr
        assert seen.json()["rows"] == [{"tenant": tenant}]


WORDS = ("owl heron finch badger otter salmon maple birch fern moss river delta glacier dune canyon "
         "granite basalt quartz amber copper").split()  # fmt: skip


def _corpus(folder) -> None:
    rng = random.Random(7)
    folder.mkdir()
    for n in range(40):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
        (folder / f"d{n:02d}.txt").write_text(" ".join(words).capitalize() + ".")


def _results(cli, folder, tiny_model) -> dict:
    result = cli("ingest", folder, "--collection", "same", "--model", tiny_model, "--json")
    assert result.exit_code == 0, result.stderr
    out = {}
    for query in ("owl heron", "granite quartz amber", "river delta", "copper moss fern", "salmon"):
        for mode in ("bm25", "vector"):
            hits = cli("search", query, "--collection", "same", "--mode", mode, "-k", "10", "--json")
            assert hits.exit_code == 0, hits.stderr
            out[query, mode] = [(os.path.basename(h["doc_id"]), round(h["score"], 6)) for h in hits.json()]
    return out


def test_search_on_the_cluster_equals_the_single_node(citus_cluster, pg_server, cli, tmp_path, tiny_model):
    """The same corpus on one node and on the cluster: the same BM25 top 10 (ids and scores: the statistics
    are the collection's, not a shard's) and the same or better vector recall."""
    folder = tmp_path / "corpus"
    _corpus(folder)
    with own_database(pg_server):
        single = _results(cli, folder, tiny_model)
    cluster = _results(cli, folder, tiny_model)
    for (query, mode), expected in single.items():
        got = cluster[query, mode]
        assert len(expected) == 10, (query, mode)
        if mode == "bm25":
            assert got == expected, query
        else:
            # 40 chunks under ef_search = 100: one node's HNSW walk visits them all, so its top 10 is the
            # exact top 10; the cluster's recall of it (a tenant's rows on one shard) must be as good.
            recall = len({d for d, _ in got} & {d for d, _ in expected}) / len(expected)
            assert recall == 1.0, (query, got, expected)


def test_purging_a_cited_document_keeps_tombstones_on_the_cluster(citus_cluster, cli, tmp_path):
    """`documents delete --purge`: the tombstone UPDATE ran as a multi-shard UPDATE calling the STABLE
    jsonb_build_object on columns, which Citus refuses; it is a router query on the tenant's shard."""
    from genloom.db.engine import session_scope

    folder = tmp_path / "purge"
    folder.mkdir()
    (folder / "herons.txt").write_text("Herons stand still in the shallows and spear fish.")
    assert cli("ingest", folder, "--collection", "purge").exit_code == 0
    answer = cli("ask", "what do herons spear?", "--collection", "purge", "--model", "extractive", "--json")
    assert answer.exit_code == 0, answer.stderr
    purged = cli(
        "documents", "delete", str(folder / "herons.txt"), "--collection", "purge", "--purge", "--yes", "--json"
    )
    assert purged.exit_code == 0, purged.stderr
    assert (purged.json()["action"], purged.json()["generations_citing"]) == ("purge", 1)
    with session_scope() as session:
        sources = session.execute(
            sa.text("SELECT chunk_id, tombstone ->> 'external_id' FROM generation_sources WHERE generation_id = :g"),
            {"g": answer.json()["generation_id"]},
        ).all()
        left = session.execute(sa.text("SELECT count(*) FROM documents WHERE external_id LIKE '%herons.txt'")).scalar()
    assert sources and all(c is None and e.endswith("herons.txt") for c, e in sources) and left == 0


def test_the_report_and_model_stats_work_on_the_cluster(citus_cluster, cli, tmp_path):
    """`genloom report` reads v_model_stats, whose outer join of the log to the (distributed) model
    registry failed on Citus under the tenant policy ("failed to postpone qual containing lateral
    reference"); the view joins the registry as a subquery since migration 0026."""
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "finch.txt").write_text("Finches crack seeds with short strong beaks.")
    assert cli("ingest", folder, "--collection", "report").exit_code == 0
    asked = cli("ask", "what do finches crack?", "--collection", "report", "--model", "extractive")
    assert asked.exit_code == 0, asked.stderr
    from genloom.db.engine import session_scope

    with session_scope() as session:  # as genloom_app, under the tenant policy
        models = set(session.execute(sa.text("SELECT model_name FROM v_model_stats")).scalars())
    assert "extractive" in models
    out = tmp_path / "report.html"
    result = cli("report", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "extractive" in out.read_text()


def test_documents_list_works_on_the_cluster(citus_cluster, cli, tmp_path):
    """`documents list` counted each document's chunks in a correlated subquery of two distributed
    tables, which Citus refused ("complex joins are only supported when all distributed tables are
    co-located and joined on their distribution columns"); on a cluster it joins on the tenant."""
    folder = tmp_path / "listed"
    folder.mkdir()
    (folder / "wrens.txt").write_text("Wrens sing loudly for birds so small.")
    (folder / "owls.txt").write_text("Owls hunt at night on silent wings.")
    assert cli("ingest", folder, "--collection", "listed").exit_code == 0
    listed = cli("documents", "list", "-c", "listed", "--json")
    assert listed.exit_code == 0, listed.stderr
    rows = listed.json()
    assert sorted(r["external_id"].rsplit("/", 1)[-1] for r in rows) == ["owls.txt", "wrens.txt"]
    assert all(r["chunks"] >= 1 for r in rows)


def _every_view(tenant: str) -> dict[str, list[str]]:
    """Every analytics view's rows for `tenant`, sorted, without what differs between two stores
    by construction: ids (and id paths), the timestamps the server fills in (now()), and the
    audit log's random key prefixes (only whether there is one)."""
    from genloom.analytics.views import ORDER
    from genloom.db.engine import session_scope
    from genloom.db.tenancy import use_tenant

    def keep(name: str) -> bool:
        return not (name == "id" or name.endswith("_id") or name in ("path", "created_at", "at", "object", "os_user"))

    def value(v, name=""):
        if name == "key_prefix":
            return v is not None
        if isinstance(v, float):
            return round(v, 6)
        if isinstance(v, list) and v and isinstance(v[0], dict):  # v_feedback_explained's sources
            return [{k: x for k, x in d.items() if keep(k)} for d in v]
        return v

    out = {}
    with use_tenant(tenant), session_scope() as session:
        for view in ORDER:
            result = session.execute(sa.text(f"SELECT * FROM {view}"))
            names = list(result.keys())
            out[view] = sorted(repr([value(v, n) for n, v in zip(names, row) if keep(n)]) for row in result)
    return out


def _load_analytics_fixture(tenant: str) -> None:
    import analytics_data
    from sqlalchemy.orm import Session

    from genloom import audit
    from genloom.db.engine import get_engine
    from genloom.db.tenancy import use_tenant
    from genloom.keys import create_key

    with use_tenant(tenant), Session(get_engine()) as session:
        analytics_data.load(session)
        key = create_key(session, role="reader", tenant=tenant)  # v_audit_log shows the acting key's prefix
        audit.record(session, "auth.failure", "GET /x", outcome="refused", actor=audit.Actor(key.id, "reader"))
        session.commit()


def test_every_analytics_view_returns_the_single_node_rows_on_the_cluster(citus_cluster, pg_server, cli):
    """tests/analytics_data.py under one tenant, on one node and on the cluster: every documented view
    returns the same rows. v_runs and v_audit_log failed on Citus ("complex joins are only supported
    when all distributed tables are co-located …"), v_dataset_lineage too ("recursive CTEs are only
    supported when …"), until migration 0027."""
    with own_database(pg_server):
        _load_analytics_fixture("views")
        single = _every_view("views")
    assert cli("db", "migrate").exit_code == 0
    _load_analytics_fixture("views")
    cluster = _every_view("views")
    assert len(single["v_runs"]) == 7 and len(single["v_dataset_lineage"]) == 6 and len(single["v_audit_log"]) == 2
    assert single["v_audit_log"] == [
        "['views', False, 'cli', 'key.create', 'ok', {'role': 'reader', 'tenant': 'views'}]",
        "['views', True, 'reader', 'auth.failure', 'refused', {}]",
    ]
    for view, rows in single.items():
        assert cluster[view] == rows, view


def test_the_analytics_summary_works_on_the_cluster(citus_cluster, cli, monkeypatch):
    from genloom.analytics.views import ORDER

    """Every figure and every view's timing, with no error: the summary failed on the cluster with a
    PendingRollbackError (a view Citus refused poisoned the session); EXPLAIN ANALYZE of
    v_feedback_sources' repartitioned joins exhausted the coordinator's memory; views over
    intermediate results only connected back to the coordinator over TCP (citus.local_hostname)."""
    monkeypatch.setenv("GENLOOM_TENANT", "views")
    if cli("sql", "SELECT 1 FROM runs LIMIT 1", "--json").json()["rows"] == []:
        _load_analytics_fixture("views")  # run alone, without the test above
    result = cli("analytics", "summary", "--json")
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    assert summary["errors"] == {}
    assert summary["totals"]["generations"] == 5 and summary["totals"]["runs"] == 7
    assert {r["metric"] for r in summary["leaders"]} >= {"fid", "accuracy"}
    assert set(summary["view_ms"]) == set(ORDER)  # each timed, or None past the 10 s timeout on a busy machine


def test_genloom_sql_reads_views_and_joins_that_need_intermediate_results(citus_cluster, cli, tmp_path, monkeypatch):
    """`genloom sql` (the read-only login) over a view whose plan has subplans, and a CTE joined not on the
    tenant: Citus fetches intermediate results worker to worker as genloom_reader, whose connection
    limit (4) refused them on the workers ("cannot connect to worker1 … to fetch intermediate results")."""
    for tenant in ("acme", "globex"):
        folder = tmp_path / tenant
        folder.mkdir()
        (folder / f"{tenant}-notes.txt").write_text(f"{tenant} keeps notes about owls and herons.")
        monkeypatch.setenv("GENLOOM_TENANT", tenant)
        assert cli("ingest", folder, "--collection", "sqlnotes").exit_code == 0
        asked = cli("ask", "what about owls?", "--collection", "sqlnotes", "--model", "extractive")
        assert asked.exit_code == 0, asked.stderr
    for tenant in ("acme", "globex"):
        monkeypatch.setenv("GENLOOM_TENANT", tenant)
        stats = cli("sql", "SELECT model_name, generations FROM v_model_stats", "--json")
        assert stats.exit_code == 0, stats.stderr
        assert {r["model_name"] for r in stats.json()["rows"]} == {"extractive"}
        joined = cli(
            "sql",
            "WITH c AS (SELECT document_id FROM chunks OFFSET 0) "
            "SELECT DISTINCT d.tenant, d.external_id FROM c JOIN documents d ON d.id = c.document_id "
            "WHERE d.external_id LIKE '%-notes.txt'",
            "--json",
        )
        assert joined.exit_code == 0, joined.stderr
        assert [(r["tenant"], r["external_id"].rsplit("/", 1)[-1]) for r in joined.json()["rows"]] == [
            (tenant, f"{tenant}-notes.txt")
        ]  # its own tenant's rows only


def _dedup_pairs(cli, folder, tiny_model) -> set[tuple[str, str]]:
    """Ingest FOLDER as collection `dups`, run semantic dedup on it; (dropped, kept) file names."""
    from genloom.db.engine import session_scope

    assert cli("ingest", folder, "--collection", "dups", "--model", tiny_model).exit_code == 0
    dry = cli("dedup", "--collection", "dups", "--method", "semantic", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr  # the command
    out = cli("dedup", "--collection", "dups", "--method", "semantic", "--json")  # cosine ≥ 0.95
    assert out.exit_code == 0, out.stderr
    with session_scope() as session:
        rows = session.execute(
            sa.text(
                "SELECT dd.external_id, kd.external_id FROM chunk_duplicates x "
                "JOIN chunks dc ON dc.id = x.chunk_id JOIN documents dd ON dd.id = dc.document_id "
                "JOIN chunks kc ON kc.id = x.duplicate_of_chunk_id JOIN documents kd ON kd.id = kc.document_id "
                "JOIN collections col ON col.id = x.collection_id WHERE col.name = 'dups' AND x.method = 'semantic'"
            )
        ).all()
    assert out.json()["flagged"] == len(rows)
    return {(os.path.basename(d), os.path.basename(k)) for d, k in rows}


def test_semantic_dedup_of_a_collection_on_the_cluster_equals_the_single_node(citus_cluster, pg_server, cli, tmp_path, tiny_model):
    """`genloom dedup --collection … --method semantic`: its k-NN (a LATERAL over `embeddings`, each
    query's neighbours among the candidates) ran on the coordinator joined to a temporary table, which
    Citus refused ("complex joins are only supported when all distributed tables are co-located").
    On the cluster it is one router query per batch; the pairs it finds are the single node's."""
    folder = tmp_path / "dups"
    _corpus(folder)
    for n in range(0, 12, 3):  # planted: exact copies and copies with one word more
        text = (folder / f"d{n:02d}.txt").read_text()
        (folder / f"z{n:02d}copy.txt").write_text(text)
        (folder / f"z{n:02d}near.txt").write_text(text[:-1] + " owl.")
    with own_database(pg_server):
        single = _dedup_pairs(cli, folder, tiny_model)
    cluster = _dedup_pairs(cli, folder, tiny_model)
    # the planted copies are flagged (the tiny random model puts other documents close too)
    assert {f"z{n:02d}copy.txt" for n in range(0, 12, 3)} <= {dropped for dropped, _ in single}, single
    assert cluster == single


def _image_dedup(cli) -> dict:
    from eval_dedup_data import digits_arrays, make_image_dataset

    from genloom.db.engine import session_scope

    images, labels = digits_arrays()
    images, labels = images[:200], labels[:200]
    copies = images[:10] + 0.01  # planted: ten near-copies
    with session_scope() as session:
        make_image_dataset(session, "digits", np.concatenate([images, copies]), np.concatenate([labels, labels[:10]]))
    out = cli("dedup", "digits@1", "--method", "semantic", "--dry-run", "--json")
    assert out.exit_code == 0, out.stderr
    return out.json()


def test_semantic_dedup_of_an_image_dataset_on_the_cluster_equals_the_single_node(citus_cluster, pg_server, cli):
    """Item vectors (item_embeddings, the embedder's partial HNSW index built on the distributed table,
    their COPY) and the same k-NN as a collection's: the cluster drops what the single node drops."""
    with own_database(pg_server):
        single = _image_dedup(cli)
    cluster = _image_dedup(cli)
    assert single["dropped"] >= 10
    assert (cluster["dropped"], cluster["by_method"]) == (single["dropped"], single["by_method"])
