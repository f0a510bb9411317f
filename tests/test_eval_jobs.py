"""Evaluation jobs (issue 7): eval model / utility / text / features as a user runs them, on `digits`."""

from __future__ import annotations

import json
import math

import pytest
import sqlalchemy as sa

from eval_dedup_data import digits_arrays, make_image_dataset, make_text_dataset

FAST_FEATURES = ["eval", "features", "digits", "--epochs", "3", "--json"]


@pytest.fixture
def digits(session):
    images, labels = digits_arrays()
    version, _ = make_image_dataset(session, "digits", images, labels)
    session.commit()
    return version


def _train(cli, *args):
    result = cli("train", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()["model"]


def test_eval_model_on_a_vae(digits, cli, session):
    from genloom.db.models import Metric, Run

    features = cli(*FAST_FEATURES)
    assert features.exit_code == 0, features.stderr
    assert features.json()["model"] == "features-digits@1"
    assert features.json()["metrics"]["test_accuracy"] > 0.5
    vae = _train(cli, "vae", "--dataset", "digits", "--steps", "3")
    result = cli("eval", "model", vae, "--against", "digits", "--n", "60", "--anomaly-class", "3", "--json")
    assert result.exit_code == 0, result.stderr
    out = result.json()
    m = out["metrics"]
    for name in ("fid", "fid_floor", "kid_mean", "kid_std", "precision", "recall", "density", "coverage",
                 "label_tv", "mode_coverage", "anomaly_auroc_corrupted", "anomaly_auroc_class", "label_share_0"):
        assert name in m, name
    assert out["features"] == "features-digits@1" and out["conditioning"] == "none"
    # A 3-step VAE is far from the data; train vs test digits are close.
    assert m["fid"] > m["fid_floor"] > 0  # two finite samples of the same digits are never at distance 0
    # precision is the share of the 60 samples inside the real manifold, coverage the share of the
    # real test digits with a sample nearby: each a count over its own denominator.
    assert m["n_samples"] == 60
    assert _is_share_of(m["precision"], m["n_samples"]) and _is_share_of(m["coverage"], m["n_real"])
    assert abs(sum(v for k, v in m.items() if k.startswith("label_share_")) - 1) < 1e-6
    run = session.get(Run, out["run_id"])
    assert run.kind == "evaluate" and run.status == "succeeded" and run.model_id is not None
    stored = dict(session.execute(sa.select(Metric.name, Metric.value).where(Metric.run_id == run.id)).all())
    assert stored == pytest.approx(m)


def _is_share_of(value: float, n: float) -> bool:
    """`value` is k / n for a whole k between 0 and n."""
    k = value * n
    return 0 <= k <= n and abs(k - round(k)) < 1e-6


def test_every_metric_name_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    names = ["fid", "fid_floor", "kid_mean", "kid_std", "precision", "recall", "density", "coverage", "label_share_",
             "label_tv", "mode_coverage", "conditional_accuracy", "feature_net_test_accuracy", "anomaly_auroc_corrupted",
             "anomaly_auroc_class", "n_samples", "n_real", "nll_per_token", "perplexity", "bpc", "eval_tokens",
             "eval_chars", "distinct_1", "distinct_2", "distinct_3", "memorisation_rate", "memorisation_windows",
             "tstr_accuracy", "trtr_accuracy", "tstr_ratio", "synthetic_train_items", "real_train_items",
             "real_test_items", "bleu", "chrf", "n_segments", "dedup_items", "dedup_kept", "dedup_dropped",
             "dedup_dropped_exact", "dedup_dropped_minhash", "dedup_dropped_semantic", "dedup_seconds",
             "leakage_val", "leakage_test", "leakage_rate", "val_accuracy", "test_accuracy"]
    missing = [n for n in names if f"`{n}" not in doc]
    assert not missing, missing


def test_conditional_accuracy_and_tstr(digits, cli):
    cli(*FAST_FEATURES)
    vae = _train(cli, "vae", "--dataset", "digits", "--steps", "3", "--conditional", "--name", "cvae")
    m = cli("eval", "model", vae, "--against", "digits", "--n", "30", "--json").json()["metrics"]
    assert _is_share_of(m["conditional_accuracy"], 30)
    stored = cli("sample", vae, "--n", "40", "--store", "--into", "synth", "--json")
    assert stored.exit_code == 0, stored.stderr
    result = cli("eval", "utility", "--synthetic", "synth", "--real", "digits", "--epochs", "2", "--json")
    assert result.exit_code == 0, result.stderr
    u = result.json()["metrics"]
    assert u["synthetic_train_items"] == 40 and u["trtr_accuracy"] > 0.3
    assert _is_share_of(u["tstr_accuracy"], u["real_test_items"])
    assert u["tstr_ratio"] == pytest.approx(u["tstr_accuracy"] / u["trtr_accuracy"])


def test_text_model_perplexity_and_memorisation(session, cli):
    text = ("to be or not to be that is the question whether tis nobler in the mind to suffer "
            "the slings and arrows of outrageous fortune or to take arms against a sea of troubles ") * 6
    lines = [text[i : i + 120] for i in range(0, len(text), 120)]
    make_text_dataset(session, "bard", lines, splits=["train"] * (len(lines) - 2) + ["test"] * 2)
    images, labels = digits_arrays()
    make_image_dataset(session, "digits", images[:60], labels[:60])
    session.commit()
    gpt = _train(cli, "transformer", "--dataset", "bard", "--steps", "2", "--set", "n_layer=1", "--set", "n_embd=32",
                 "--set", "n_head=2", "--set", "block_size=32")
    result = cli("eval", "model", gpt, "--against", "bard", "--samples", "3", "--json")
    assert result.exit_code == 0, result.stderr
    m = result.json()["metrics"]
    # Perplexity and bits per character are the same NLL in other units (the NLL itself is checked
    # against a hand-computed value in test_eval_metrics.py).
    assert m["perplexity"] == pytest.approx(math.exp(m["nll_per_token"]), rel=1e-9)
    assert m["bpc"] == pytest.approx(m["nll_per_token"] * m["eval_tokens"] / (m["eval_chars"] * math.log(2)), rel=1e-9)
    # char tokenizer: one token per character, the held-out text's first one has nothing to predict it
    assert m["eval_tokens"] == m["eval_chars"] - 1 > 100
    assert _is_share_of(m["memorisation_rate"], m["memorisation_windows"]) and "distinct_2" in m
    bad = cli("eval", "model", gpt, "--against", "digits")
    assert bad.exit_code == 1
    assert "is a text model (transformer) but digits@1 holds image items" in bad.stderr
    assert bad.stderr.count("\n") == 1


def test_eval_text_sacrebleu_example(tmp_path, cli):
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("The dog bit the man.\nIt wasn't surprising.\nThe man had just bitten him.\n")
    r1, r2 = tmp_path / "r1.txt", tmp_path / "r2.txt"
    r1.write_text("The dog bit the man.\nIt was not unexpected.\nThe man bit him first.\n")
    r2.write_text("The dog had bit the man.\nNo one was surprised.\nThe man had bitten the dog.\n")
    result = cli("eval", "text", "--hyp", hyp, "--ref", r1, "--ref", r2, "--json")
    assert result.exit_code == 0, result.stderr
    m = result.json()["metrics"]
    assert round(m["bleu"], 2) == 48.53 and round(m["chrf"], 2) == 59.73
    short = tmp_path / "short.txt"
    short.write_text("one line\n")
    bad = cli("eval", "text", "--hyp", hyp, "--ref", short)
    assert bad.exit_code == 1 and "one reference line per hypothesis" in bad.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "model", "ghost", "--against", "digits"], "no model 'ghost'"),
        (["eval", "model", "features-digits", "--against", "digits"], "is a feature network (classifier), not a generative model"),
        (["eval", "model", "features-digits", "--against", "digits", "--n", "4"], "--n 4 is too few"),
        (["eval", "model", "features-digits", "--against", "digits", "--split", "dev"], "unknown split 'dev'"),
        (["eval", "utility", "--synthetic", "digits", "--real", "digits"], "no labelled synthetic items"),
    ],
)
def test_bad_input_is_one_line(digits, cli, args, message):
    cli("eval", "features", "digits", "--epochs", "0.1")  # a registered classifier; its quality is irrelevant here
    result = cli(*args)
    assert result.exit_code == 1
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_unknown_feature_network_and_tiny_split(digits, session, cli):
    vae = _train(cli, "vae", "--dataset", "digits", "--steps", "2")
    bad = cli("eval", "model", vae, "--against", "digits", "--features", "nonet")
    assert bad.exit_code == 1 and "unknown feature network 'nonet'" in bad.stderr
    images, labels = digits_arrays()
    make_image_dataset(session, "tiny", images[:40], labels[:40], splits=["train"] * 35 + ["test"] * 5)
    session.commit()
    cli("eval", "features", "tiny", "--epochs", "0.5")
    small = cli("eval", "model", vae, "--against", "tiny")
    assert small.exit_code == 1 and "has 5 items: need at least 6" in small.stderr, small.stderr


def test_demo_step_runs_twice(session, tmp_path):
    from genloom.datasets.importers import import_digits
    from genloom.demo_steps import DemoContext
    from genloom.demo_steps import evaluation as step
    from genloom.training.options import TrainOptions
    from genloom.jobs.train import train

    import_digits("digits")
    train("vae", TrainOptions(dataset="digits", steps=5, batch_size=64, name="demo-vae",
                              hparams={"channels": "8", "latent_dim": "4"}))
    ctx = DemoContext(out_dir=tmp_path, quick=True)
    first = step.run(ctx)
    assert first["features"] == "features-digits@1" and first["fid"] > 0
    second = step.run(ctx)  # idempotent: no new dataset version, the feature network is reused
    assert second["features"] == "features-digits@1" and second["duplicates_found"] == first["duplicates_found"]
