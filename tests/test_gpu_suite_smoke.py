"""The GPU speed suite rehearsed on the CPU (`bench/gpu_suite.sh --cpu-smoke`), so it cannot rot
between the rare GPU runs: every check runs a few steps, writes its JSON, and imports nothing the
GPU machine lacks; a check that fails leaves the others running."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
import gpu_suite

CHECKS = ("embedding", "images", "training", "generation")
ENV_KEYS = {"device", "device_name", "python", "torch", "transformers", "sentence_transformers", "git_sha",
            "load_avg_start", "load_avg_end", "started_utc"}
ROW_KEYS = {"key", "measure", "unit", "bare", "genloom", "ratio", "better", "target", "met"}
RESULT_KEYS = {
    "embedding": {"documents", "chunks", "bare_chunks_per_s", "ingest_chunks_per_s", "ingest_seconds", "model_dtype"},
    "images": {"dataset", "vae", "diffusion"},
    "training": {"dataset", "reference", "genloom"},
    "generation": {"batch1", "concurrent", "static_cache", "prompt_tokens", "new_tokens"},
}
ROWS = {
    "embedding": {"embedding_chunks", "embedding_only"},
    "images": {"images_vae", "images_diffusion"},
    "training": {"train_ms_per_iter", "train_iterations", "train_best_val", "train_first_window"},
    "generation": {"gen_batch1", "gen_overhead", "gen_concurrent2", "gen_concurrent4"},
}


def run_suite(out, db_url, *args, env=None):
    return subprocess.run(
        ["bash", "bench/gpu_suite.sh", "--cpu-smoke", "--out", str(out), *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PYTHON": sys.executable, "DATABASE_URL": db_url, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def numbers(value, path="$"):
    """Every number in a JSON document, with where it is (booleans are not numbers here)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from numbers(v, f"{path}[{i}]")


def test_cpu_smoke_runs_every_check_and_writes_complete_json(db_url, tmp_path):
    proc = run_suite(tmp_path, db_url)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for check in CHECKS:
        doc = json.loads((tmp_path / f"{check}.json").read_text())
        assert doc["check"] == check
        assert doc["status"] == "ok", doc.get("error")
        assert doc["mode"] == "cpu-smoke"
        assert ENV_KEYS <= set(doc["env"]), ENV_KEYS - set(doc["env"])
        assert doc["env"]["device"] == "cpu"
        assert RESULT_KEYS[check] <= set(doc["results"]), RESULT_KEYS[check] - set(doc["results"])
        assert {row["key"] for row in doc["rows"]} == ROWS[check]
        for row in doc["rows"]:
            assert set(row) == ROW_KEYS
            assert row["genloom"] > 0
            if row["key"] != "gen_overhead":  # a share of the call, with no bare counterpart
                assert row["bare"] > 0 and row["ratio"] == pytest.approx(row["genloom"] / row["bare"], rel=1e-2)
        bad = [(where, v) for where, v in numbers(doc) if not math.isfinite(v)]
        assert not bad, bad
        # nothing the GPU machine lacks (bench/gpu_image_packages.txt + bench/gpu_wheels.txt)
        assert doc["gpu_import_gaps"] == []
    training = json.loads((tmp_path / "training.json").read_text())["results"]
    # both sides ran the same configured iterations (the smoke budget is far above them)
    assert training["reference"]["iterations"] == training["genloom"]["iterations"] == gpu_suite.CONFIG["cpu-smoke"]["training"]["iters"]
    generation = json.loads((tmp_path / "generation.json").read_text())["results"]
    assert [c["requests"] for c in generation["concurrent"]] == [2, 4]
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# genloom GPU speed suite (CPU smoke run")
    for check in CHECKS:
        assert f"- {check}: ok in " in summary
    table = [line for line in summary.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + sum(len(r) for r in ROWS.values())  # the header, then one line per row


def test_a_failing_check_does_not_stop_the_others(db_url, tmp_path):
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    out = tmp_path / "out"
    out.mkdir()
    (out / "embedding.json").write_text('{"check": "embedding", "status": "ok"}')  # an earlier run's: replaced
    proc = run_suite(out, db_url, "--only", "embedding,training", env={"GENLOOM_SUITE_MINILM": str(broken)})
    assert proc.returncode == 1, proc.stdout[-3000:]
    embedding = json.loads((out / "embedding.json").read_text())
    assert embedding["status"] == "failed"
    assert "not-a-model" in embedding["error"]
    assert json.loads((out / "training.json").read_text())["status"] == "ok"
    assert not (out / "images.json").exists()
    summary = (out / "summary.md").read_text()
    assert "- embedding: failed" in summary and "- training: ok in " in summary
    assert "images" not in summary  # not asked for: not reported


def test_a_check_stopped_by_its_time_limit_keeps_what_it_measured(tmp_path):
    partial = {"check": "generation", "status": "partial", "mode": "gpu", "rows": [{"key": "gen_batch1"}], "results": {"batch1": {}}}
    (tmp_path / "generation.json").write_text(json.dumps(partial))
    log = tmp_path / "generation.log"
    log.write_text("compiling\nstill compiling\n")
    gpu_suite.mark("generation", tmp_path, 124, log, "gpu")
    doc = json.loads((tmp_path / "generation.json").read_text())
    assert doc["status"] == "timeout"
    assert doc["rc"] == 124
    assert doc["error"] == "stopped by its time limit (exit 124); last output: still compiling"
    assert doc["rows"] == [{"key": "gen_batch1"}] and doc["results"] == {"batch1": {}}
    gpu_suite.mark("images", tmp_path, 1, None, "gpu")  # died before writing anything
    assert json.loads((tmp_path / "images.json").read_text())["status"] == "failed"
