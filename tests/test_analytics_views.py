"""The analytics views return the aggregates worked out by hand over tests/analytics_data.py."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

import analytics_data


@pytest.fixture
def data(engine, session):
    """A fresh database with the fixture, for tests that change rows."""
    return analytics_data.load(session)


@pytest.fixture(scope="module")
def shared_db(pg_server):
    """One database with the fixture for every read-only test here: creating a database
    per test costs seconds on a busy machine, and these tests only SELECT."""
    from sqlalchemy.orm import Session

    from conftest import own_database
    from genloom.db.engine import get_engine, reset_engines

    with own_database(pg_server) as url:
        with Session(get_engine()) as s:
            ids = analytics_data.load(s)
        reset_engines()
        yield url, ids


@pytest.fixture
def rdata(shared_db, monkeypatch):
    from genloom.db.engine import reset_engines

    monkeypatch.setenv("DATABASE_URL", shared_db[0])
    reset_engines()
    yield shared_db[1]
    reset_engines()


@pytest.fixture
def rengine(rdata):
    from genloom.db.engine import get_engine

    return get_engine()


@pytest.fixture
def rsession(rengine):
    from sqlalchemy.orm import Session

    with Session(rengine) as s:
        yield s
        s.rollback()


def rows(session, query, **params):
    return [dict(r._mapping) for r in session.execute(sa.text(query), params)]


def test_every_documented_view_exists_and_the_reader_can_select_it(rengine, rdata):
    from genloom.analytics.views import VIEWS

    with rengine.connect() as conn:
        present = set(conn.execute(sa.text("SELECT viewname FROM pg_views WHERE schemaname = 'public'")).scalars())
        assert set(VIEWS) <= present
        for view in VIEWS:
            assert conn.execute(sa.text("SELECT has_table_privilege('genloom_reader', :v, 'SELECT')"), {"v": view}).scalar()


def test_model_stats(rsession, rdata):
    by_model = {r["model_name"]: r for r in rows(rsession, "SELECT * FROM v_model_stats")}
    assert set(by_model) == {"extractive", "gpt"}
    ex, gpt = by_model["extractive"], by_model["gpt"]
    # extractive: g1 ok, g2 error, g5 ok; feedback only on g1 (scores 5 and 3, one thumbs up).
    assert (ex["generations"], ex["errors"]) == (3, 1)
    assert ex["error_rate"] == pytest.approx(1 / 3)
    assert (ex["generations_with_feedback"], ex["feedback"]) == (1, 2)
    assert ex["feedback_rate"] == pytest.approx(1 / 3)
    assert ex["mean_score"] == pytest.approx(4.0)
    assert ex["thumbs_up_share"] == pytest.approx(1.0)
    # retrieval [10, 20, 50]: p50 20; p95 at 1.9 → 20 + 0.9·30 = 47.
    assert (ex["retrieval_ms_p50"], ex["retrieval_ms_p95"]) == pytest.approx((20.0, 47.0))
    # generation [100, 300] (the error has none): p50 200, p95 100 + 0.95·200 = 290.
    assert (ex["generation_ms_p50"], ex["generation_ms_p95"]) == pytest.approx((200.0, 290.0))
    # total [20, 110, 350]: p50 110, p95 110 + 0.9·240 = 326.
    assert (ex["total_ms_p50"], ex["total_ms_p95"]) == pytest.approx((110.0, 326.0))
    # tokens/s over ok generations: (50 + 30) / 0.4 s = 200.
    assert ex["tokens_per_s"] == pytest.approx(200.0)
    assert ex["model_ref"] is None
    # gpt@1: g3 (score 1, thumbs down), g4 (thumbs up).
    assert gpt["model_ref"] == "gpt@1" and gpt["model_revision"] == "abc"
    assert (gpt["generations"], gpt["errors"], gpt["generations_with_feedback"]) == (2, 0, 2)
    assert gpt["feedback_rate"] == pytest.approx(1.0)
    assert gpt["mean_score"] == pytest.approx(1.0)
    assert gpt["thumbs_up_share"] == pytest.approx(0.5)
    assert (gpt["total_ms_p50"], gpt["total_ms_p95"]) == pytest.approx((335.0, 429.5))
    assert gpt["tokens_per_s"] == pytest.approx(200 / 0.6)


def test_template_stats(rsession, rdata):
    by_version = {r["template_version"]: r for r in rows(rsession, "SELECT * FROM v_template_stats")}
    v1, v2 = by_version[1], by_version[2]
    # t@1: g1, g5 (p1), g3 (p3), g4 (p4); feedback on g1, g3, g4: scores 5, 3, 1; thumbs +1, -1, +1.
    assert (v1["generations"], v1["errors"], v1["generations_with_feedback"], v1["feedback"]) == (4, 0, 3, 4)
    assert v1["feedback_rate"] == pytest.approx(0.75)
    assert v1["mean_score"] == pytest.approx(3.0)
    assert v1["thumbs_up_share"] == pytest.approx(2 / 3)
    # t@2: only the failed g2.
    assert (v2["generations"], v2["errors"], v2["error_rate"], v2["feedback"]) == (1, 1, 1.0, 0)
    assert v2["mean_score"] is None


def test_daily(rsession, rdata):
    days = {r["day"]: r for r in rows(rsession, "SELECT * FROM v_daily ORDER BY day")}
    d1, d2 = days[dt.date(2026, 11, 1)], days[dt.date(2026, 11, 2)]
    assert (d1["generations"], d1["errors"], d1["active_sessions"], d1["new_sessions"], d1["feedback"]) == (2, 1, 1, 1, 2)
    # Day 2: g3, g4 (rsession b's two turns) and g5 (a second answer to rsession a's day-1
    # prompt: generated on day 2, but rsession a had no new turn, so only b is active).
    assert (d2["generations"], d2["errors"], d2["active_sessions"], d2["new_sessions"], d2["feedback"]) == (3, 0, 1, 1, 2)
    assert d1["mean_score"] == pytest.approx(4.0) and d2["mean_score"] == pytest.approx(1.0)
    per_model = rows(rsession, "SELECT day, model_name, generations, feedback FROM v_model_daily ORDER BY day, model_name")
    assert [(r["day"].day, r["model_name"], r["generations"], r["feedback"]) for r in per_model] == [
        (1, "extractive", 2, 2), (2, "extractive", 1, 0), (2, "gpt", 2, 2),
    ]


def test_citations_and_never_cited(rsession, rdata):
    chunks = {r["chunk_id"]: r for r in rows(rsession, "SELECT * FROM v_chunk_citations")}
    # c12: g1 and g5 → feedback of g1 only: (5 + 3) / 2.
    assert chunks[rdata["c12"]]["citations"] == 2
    assert chunks[rdata["c12"]]["mean_feedback_score"] == pytest.approx(4.0)
    # c21: g1 (rank 2) and g3 (rank 1): scores 5, 3, 1.
    assert chunks[rdata["c21"]]["mean_rank"] == pytest.approx(1.5)
    assert chunks[rdata["c21"]]["mean_feedback_score"] == pytest.approx(3.0)
    # c11 is the superseded version, cited by g4 which only has a thumbs up.
    assert chunks[rdata["c11"]]["is_current"] is False
    assert chunks[rdata["c11"]]["mean_feedback_score"] is None
    assert chunks[rdata["c11"]]["thumbs_up_share"] == pytest.approx(1.0)
    assert rdata["c31"] not in chunks

    docs = {r["document_id"]: r for r in rows(rsession, "SELECT * FROM v_document_citations")}
    # d2: g1 cites one of its chunks, g3 two → 3 citations, 2 answers; g3's score counts once.
    d2 = docs[rdata["d2"]]
    assert (d2["citations"], d2["answers"]) == (3, 2)
    assert d2["mean_feedback_score"] == pytest.approx((5 + 3 + 1) / 3)
    assert docs[rdata["d1v2"]]["mean_feedback_score"] == pytest.approx(4.0)
    assert docs[rdata["d1v1"]]["document_version"] == 1

    never = rows(rsession, "SELECT external_id, document_version, chunks FROM v_documents_never_cited")
    assert never == [{"external_id": "d3", "document_version": 1, "chunks": 1}]


def test_feedback_explained_reaches_sources_model_training_run_and_dataset(rsession, rdata):
    bad = rows(rsession, "SELECT * FROM v_feedback_explained WHERE score <= 2")
    assert len(bad) == 1
    row = bad[0]
    assert row["feedback_id"] == rdata["f3"] and row["label"] == "wrong"
    assert (row["generation_id"], row["prompt_id"], row["session_id"]) == (rdata["g3"], rdata["p3"], rdata["s2"])
    assert (row["question"], row["answer"], row["collection"], row["turn"]) == ("q3", "answer g3", "c1", 1)
    assert [(s["rank"], s["chunk_id"], s["doc_id"], s["document_version"]) for s in row["sources"]] == [
        (1, rdata["c21"], "d2", 1), (2, rdata["c22"], "d2", 1),
    ]
    assert row["model_ref"] == "gpt@1" and row["training_run_id"] == rdata["R1"]
    assert row["training_dataset"] == "ds@1" and row["training_dataset_version_id"] == rdata["ds@1"]
    # Extractive answers have no registry model; g4's feedback (turn 2) cites a superseded version.
    all_rows = {r["feedback_id"]: r for r in rows(rsession, "SELECT * FROM v_feedback_explained")}
    assert len(all_rows) == 4
    assert all_rows[rdata["f1"]]["model_ref"] is None and all_rows[rdata["f1"]]["training_run_id"] is None
    assert all_rows[rdata["f4"]]["turn"] == 2 and all_rows[rdata["f4"]]["sources"][0]["superseded"] is True
    flat = rows(rsession, "SELECT feedback_id, rank, external_id FROM v_feedback_sources ORDER BY feedback_id, rank")
    # f1 and f2 (g1: two sources), f3 (g3: two), f4 (g4: one).
    assert len(flat) == 7


def test_dataset_versions_and_lineage(rsession, rdata):
    versions = {r["ref"]: r for r in rows(rsession, "SELECT * FROM v_dataset_versions")}
    assert (versions["ds@1"]["items"], versions["ds@1"]["real"], versions["ds@1"]["synthetic"]) == (3, 3, 0)
    ds2 = versions["ds@2"]
    assert (ds2["items"], ds2["real"], ds2["synthetic"], ds2["train"]) == (5, 3, 2, 5)
    assert ds2["synthetic_share"] == pytest.approx(0.4)
    assert ds2["parent"] == "ds@1" and ds2["created_by_run_kind"] == "sample"
    assert ds2["models_sampled_in"] == ["vae@1"]

    lineage = rows(rsession, "SELECT depth, relation, ancestor, via_model, via_model_training_run_id FROM v_dataset_lineage "
                            "WHERE ref = 'synth@1' ORDER BY depth")
    assert lineage == [
        {"depth": 0, "relation": "self", "ancestor": "synth@1", "via_model": None, "via_model_training_run_id": None},
        {"depth": 1, "relation": "sampled_from_model_trained_on", "ancestor": "ds@1", "via_model": "vae@1",
         "via_model_training_run_id": rdata["R2"]},
    ]
    ds2_lineage = rows(rsession, "SELECT depth, relation, ancestor FROM v_dataset_lineage WHERE ref = 'ds@2' ORDER BY depth, relation")
    assert [(r["depth"], r["relation"], r["ancestor"]) for r in ds2_lineage] == [
        (0, "self", "ds@2"), (1, "parent", "ds@1"), (1, "sampled_from_model_trained_on", "ds@1"),
    ]


def test_lineage_survives_a_cycle(engine, session, data):
    # A model trained on synth@1 whose samples land in ds@1 would close a loop; the walk must stop.
    from analytics_data import _image_item
    from genloom.db.models import DatasetMember

    session.execute(sa.text("UPDATE models SET input_version_id = :v WHERE name = 'gan'"), {"v": data["synth@1"]})
    item = _image_item(99, "synthetic", model_id=data["gan"])
    session.add(item)
    session.flush()
    session.add(DatasetMember(version_id=data["ds@1"], item_id=item.id, split="train"))
    session.commit()
    depths = rows(session, "SELECT max(depth) AS d, count(*) AS n FROM v_dataset_lineage WHERE ref = 'ds@1'")[0]
    assert depths["d"] <= 3 and depths["n"] < 10


def test_runs_final_metrics_and_leaderboard(rsession, rdata):
    finals = {(r["run_id"], r["metric"]): r["value"] for r in rows(rsession, "SELECT * FROM v_run_final_metrics")}
    assert finals[(rdata["R1"], "loss")] == 1.0  # the last step
    assert finals[(rdata["R1"], "val_loss")] == 1.5  # the step-NULL row
    runs = {r["run_id"]: r for r in rows(rsession, "SELECT * FROM v_runs")}
    assert runs[rdata["R1"]]["final_metrics"] == {"loss": 1.0, "val_loss": 1.5, "lr": 0.001}
    assert runs[rdata["R1"]]["model_ref"] == "gpt@1" and runs[rdata["R1"]]["input_dataset"] == "ds@1"
    assert runs[rdata["R1"]]["duration_s"] == pytest.approx(300.0)
    assert runs[rdata["R3"]]["output_dataset"] == "synth@1"

    board = rows(rsession, "SELECT metric, rank, model_ref, value, higher_is_better FROM v_leaderboard "
                          "WHERE dataset_ref = 'ds@1' ORDER BY metric, rank")
    assert [(r["metric"], r["rank"], r["model_ref"], r["value"]) for r in board] == [
        ("accuracy", 1, "gan@1", 0.9), ("accuracy", 2, "vae@1", 0.7),
        # fid: lower is better; gan's latest succeeded run (20) counts, not the older 25 nor the failed 5.
        ("fid", 1, "gan@1", 20.0), ("fid", 2, "vae@1", 30.0),
        ("loss", 1, "gpt@1", 1.0), ("loss", 2, "vae@1", 4.0),
        ("val_loss", 1, "gpt@1", 1.5),
    ]
    assert {r["metric"]: r["higher_is_better"] for r in board} == {
        "accuracy": True, "fid": False, "loss": False, "val_loss": False,
    }


def test_summary_reads_the_views(rsession, rdata):
    from genloom.analytics.summary import collect_summary

    summary = collect_summary(rsession)
    assert summary["totals"]["generations"] == 5 and summary["totals"]["documents_never_cited"] == 1
    assert [m["model"] for m in summary["models"]] == ["extractive", "gpt@1"]
    assert summary["top_documents"][0]["external_id"] == "d2"
    assert {d["ref"] for d in summary["datasets"]} == {"ds@2", "synth@1"}
    assert set(summary["view_ms"]) >= {"v_model_stats", "v_leaderboard"}
    assert all(ms is not None and ms >= 0 for ms in summary["view_ms"].values())


def test_summary_cli_and_views_cli(cli, rdata):
    result = cli("analytics", "summary", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["totals"]["feedback"] == 4
    result = cli("analytics", "views", "--json")
    assert result.exit_code == 0
    assert "v_feedback_explained" in {v["view"] for v in result.json()}


def test_a_figure_the_server_refuses_is_reported_and_the_rest_still_computed(engine, data, cli):
    """A view the server cannot run (here: dropped; on a Citus cluster: one its planner refused) is one
    error for its figure and its timing; the figures after it still come from the same session (it
    raised PendingRollbackError for every figure after the first failure)."""
    with engine.begin() as conn:
        conn.execute(sa.text("DROP VIEW v_leaderboard"))
    result = cli("analytics", "summary", "--json")
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    missing = 'relation "v_leaderboard" does not exist'
    assert summary["errors"] == {"leaders": missing, "v_leaderboard": missing}
    assert summary["leaders"] is None and summary["view_ms"]["v_leaderboard"] is None
    assert summary["totals"]["feedback"] == 4 and summary["view_ms"]["v_audit_log"] >= 0  # before and after it
    shown = cli("analytics", "summary")
    assert shown.exit_code == 0 and f"leaders: failed: {missing}" in shown.stdout


def test_retention_deletes_old_rows_in_batches_and_keeps_newer_ones(engine, session, data, cli):
    from genloom.analytics.retention import apply_retention, count_expired, parse_cutoff

    cutoff = parse_cutoff("2026-11-02")
    # Day 1: g1, g2 (and g1's two feedback rows). p2 has only g2; p1 keeps g5 (day 2); s1 keeps p1.
    assert count_expired(session, cutoff) == {"generations": 2, "feedback": 2, "prompts": 1, "sessions": 0}
    session.rollback()
    assert apply_retention(engine, cutoff, batch_size=1) == {"generations": 2, "prompts": 1, "sessions": 0}
    left = rows(session, "SELECT (SELECT array_agg(id ORDER BY id) FROM generations) AS g, "
                         "(SELECT array_agg(id ORDER BY id) FROM prompts) AS p, (SELECT count(*) FROM feedback) AS f, "
                         "(SELECT count(*) FROM generation_sources) AS s")[0]
    assert left["g"] == [data["g3"], data["g4"], data["g5"]]
    assert left["p"] == [data["p1"], data["p3"], data["p4"]]
    assert (left["f"], left["s"]) == (2, 4)
    # Re-running finds nothing; the CLI says so; a bad age is a one-line error.
    again = cli("retention", "--older-than", "2026-11-02", "--yes", "--json")
    assert again.exit_code == 0 and again.json()["deleted"]["generations"] == 0
    bad = cli("retention", "--older-than", "soon")
    assert bad.exit_code == 1 and bad.stderr.startswith("error: --older-than must be an age like 90d")


def test_parse_cutoff_ages():
    import datetime as dt

    from genloom.analytics.retention import parse_cutoff

    now = dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc)
    assert parse_cutoff("90d", now=now) == now - dt.timedelta(days=90)
    assert parse_cutoff("2w", now=now) == now - dt.timedelta(days=14)
    assert parse_cutoff("1y", now=now) == now - dt.timedelta(days=365)
    assert parse_cutoff("2026-01-31") == dt.datetime(2026, 1, 31, tzinfo=dt.timezone.utc)
