"""Diffusion through the shared commands, on `digits`: train, sample (DDPM/DDIM), guidance, prompts, bad input.

One text-conditioned model is trained once for the module (300 steps of a small
U-Net: long enough that prompts really steer samples) in a database of the module's own.
"""

from __future__ import annotations

import pytest
import torch

from conftest import own_database

PROMPTS = {  # several phrasings never used as training captions (see captions.TEMPLATES)
    "a handwritten seven": "7",
    "the number 3": "3",
    "a drawing of a zero": "0",
    "digit four written by hand": "4",
    "handwritten two": "2",
}


@pytest.fixture(scope="module")
def diffusion_db(pg_server):
    with own_database(pg_server) as url:
        yield url


@pytest.fixture
def cli_db(diffusion_db, monkeypatch, cli):
    monkeypatch.setenv("DATABASE_URL", diffusion_db)
    return cli


@pytest.fixture(scope="module")
def trained(diffusion_db):
    """(model ref, train JSON) of a text-conditioned model on digits, trained through the CLI."""
    from genloom.cli.main import main
    from genloom.datasets.importers import import_digits

    import_digits("digits")
    import contextlib
    import io
    import json

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["train", "diffusion", "--dataset", "digits", "--text-conditional", "--steps", "300",
                     "--batch-size", "128", "--lr", "2e-3", "--name", "tdiff", "--seed", "0",
                     "--set", "base_channels=32", "--set", "channel_mults=1,2", "--set", "attention=false",
                     "--set", "ema_decay=0.995", "--json"])
    assert code == 0
    return "tdiff@1", json.loads(buf.getvalue())


def _sample(ref, **kw):
    from genloom.db.engine import session_scope
    from genloom.jobs.models import load_model
    from genloom.training.options import SampleOptions

    with session_scope() as s:
        row, arch_cls, runner = load_model(s, ref, "cpu")
        opts = SampleOptions(**kw)
        arch_cls.check_sample_options(opts, dict(row.config))
    return runner.sample(opts)


def test_training_registers_a_model_with_finite_losses(trained, cli_db):
    ref, out = trained
    assert out["model"] == ref
    assert 0 < out["metrics"]["val_loss"] < 0.5  # ε-MSE starts at ~1.0
    shown = cli_db("models", "show", ref, "--json").json()
    assert shown["architecture"] == "diffusion" and shown["dataset"] == "digits@1"
    assert shown["config"]["conditioning"] == "text"


@pytest.mark.parametrize("sampler, steps", [("ddim", 10), ("ddpm", 50)])
def test_samplers_give_the_right_shape_and_are_deterministic_under_a_seed(trained, cli_db, sampler, steps):
    ref, _ = trained
    a = _sample(ref, n=3, seed=7, sampler=sampler, steps=steps, prompt="a handwritten seven")
    b = _sample(ref, n=3, seed=7, sampler=sampler, steps=steps, prompt="a handwritten seven")
    c = _sample(ref, n=3, seed=8, sampler=sampler, steps=steps, prompt="a handwritten seven")
    assert a.images.shape == (3, 1, 8, 8)
    assert a.images.min() >= 0 and a.images.max() <= 1
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert a.metadata[0]["sampler"] == sampler and a.metadata[0]["steps"] == steps


def test_guidance_changes_samples(trained, cli_db):
    ref, _ = trained
    plain = _sample(ref, n=4, seed=1, steps=10, guidance=0.0, prompt="the digit 5")
    guided = _sample(ref, n=4, seed=1, steps=10, guidance=3.0, prompt="the digit 5")
    assert (plain.images - guided.images).abs().mean() > 0.01


def test_prompts_steer_samples_to_the_right_digit(trained, cli_db):
    """Nearest class mean in pixel space of the real digits: chance is 10 %; an unsteered model stays near it."""
    from sklearn.datasets import load_digits

    ref, _ = trained
    data = load_digits()
    images = torch.tensor(data.images / 16.0, dtype=torch.float32)
    means = torch.stack([images[torch.tensor(data.target) == k].mean(0) for k in range(10)])
    correct = total = 0
    for prompt, label in PROMPTS.items():
        samples = _sample(ref, n=12, seed=0, steps=20, guidance=2.0, prompt=prompt)
        dist = ((samples.images[:, 0, None] - means[None]) ** 2).flatten(2).sum(-1)
        correct += int((dist.argmin(1) == int(label)).sum())
        total += len(samples.images)
        assert samples.metadata[0]["prompt"] == prompt
    assert correct / total >= 0.5, f"prompted samples matched their digit {correct}/{total} times"


def test_cli_sample_writes_a_grid_and_stores_synthetic_items(trained, cli_db, tmp_path):
    ref, _ = trained
    png = tmp_path / "sevens.png"
    out = cli_db("sample", ref, "--prompt", "a handwritten seven", "--n", "4", "--steps", "5", "--out", png,
                 "--store", "--into", "synthetic-digits", "--json")
    assert out.exit_code == 0, out.stderr
    assert png.exists() and png.stat().st_size > 0
    assert len(out.json()["items"]) == 4
    shown = cli_db("datasets", "show", out.json()["dataset"], "--json").json()
    assert shown["by_origin"] == {"real": 0, "synthetic": 4}
    # without a prompt, a text model cycles through its labels' first captions
    plain = _sample(ref, n=3, seed=0, steps=5)
    assert plain.labels == ["0", "1", "2"] and plain.metadata[1]["prompt"] == "a handwritten one"


def test_bad_input_is_one_line(trained, cli_db, tmp_path):
    from genloom.datasets.importers import import_text

    ref, _ = trained
    # an unconditional and a class-conditional model, two steps each
    for extra, name in (([], "udiff"), (["--conditional"], "cdiff")):
        res = cli_db("train", "diffusion", "--dataset", "digits", "--steps", "2", "--name", name, *extra,
                     "--set", "base_channels=8", "--set", "channel_mults=1,2", "--json")
        assert res.exit_code == 0, res.stderr
    (tmp_path / "t.txt").write_text("some text\n" * 10)
    import_text(tmp_path / "t.txt", "words")
    cases = [
        (["sample", "udiff", "--guidance", "2"], "--guidance needs a conditional model"),
        (["sample", "udiff", "--prompt", "a seven"], "--prompt needs a text-conditioned model"),
        (["sample", "cdiff", "--prompt", "a seven"], "--prompt needs a text-conditioned model"),
        (["sample", ref, "--sampler", "euler"], "unknown --sampler 'euler'"),
        (["sample", ref, "--sampler", "ddpm", "--eta", "0.5"], "--eta applies to the DDIM sampler only"),
        (["sample", ref, "--steps", "5000"], "--steps must be between 1 and 1000"),
        (["train", "diffusion", "--dataset", "words", "--steps", "1"], "diffusion trains on image datasets"),
        (["train", "diffusion", "--dataset", "digits", "--conditional", "--text-conditional"], "not both"),
    ]
    for args, needle in cases:
        res = cli_db(*args)
        assert res.exit_code == 1, (args, res.stdout)
        assert needle in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    ok = cli_db("sample", "cdiff", "--label", "3", "--guidance", "1.5", "--n", "2", "--steps", "2", "--json")
    assert ok.exit_code == 0, ok.stderr
