"""The hybrids on `digits`: VAE-GAN, latent diffusion over a registered autoencoder, CLIP and CLIP guidance.

Tiny networks trained a few steps through the CLI in one database for the module; each test
then samples, stores and checks lineage, or checks a refusal.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import torch
from conftest import own_database
from test_train import one_thread  # noqa: F401  (autouse: one intra-op thread for tiny networks)

TINY_AE = ["--set", "channels=8", "--set", "latent_dim=16", "--batch-size", "64"]
TINY_LDM = ["--set", "base_channels=8", "--set", "channel_mults=1,2", "--batch-size", "64"]


@pytest.fixture(scope="module")
def hybrids_db(pg_server):
    with own_database(pg_server) as url:
        from genloom.datasets.importers import import_digits

        import_digits("digits")
        yield url


@pytest.fixture
def run(hybrids_db, monkeypatch, cli):
    monkeypatch.setenv("DATABASE_URL", hybrids_db)

    def call(*args):
        r = cli(*args, "--json")
        assert r.exit_code == 0, r.stderr
        return r.json()

    call.raw = cli
    return call


@pytest.fixture(scope="module")
def models(hybrids_db):
    """Every model the tests use, trained once: refs by role."""
    import contextlib
    import io
    import json

    from genloom.cli.main import main

    def train(*args):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["train", *args, "--dataset", "digits", "--json"]) == 0
        return json.loads(buf.getvalue())

    torch.set_num_threads(1)
    out = {
        "vae-gan": train("vae-gan", "--steps", "30", "--lr", "3e-3", "--name", "vg", *TINY_AE, "--set", "d_channels=8"),
        "vae": train("vae", "--steps", "3", "--name", "ae", *TINY_AE),
        "clip": train("clip", "--steps", "40", "--name", "c", "--set", "channels=8", "--batch-size", "128"),
        "diffusion": train("diffusion", "--steps", "2", "--name", "d", "--set", "base_channels=8",
                           "--set", "channel_mults=1,2", "--set", "attention=false"),
    }
    out["latent"] = train("latent-diffusion", "--autoencoder", "vg@1", "--text-conditional", "--steps", "3",
                          "--name", "ld", *TINY_LDM)
    return out


def _sample(ref, **kw):
    from genloom.db.engine import session_scope
    from genloom.jobs.models import load_model
    from genloom.training.options import SampleOptions
    from genloom.jobs.sample import _load_guide

    with session_scope() as s:
        row, arch_cls, runner = load_model(s, ref, "cpu")
        opts = SampleOptions(**kw)
        arch_cls.check_sample_options(opts, dict(row.config))
        if opts.guide:
            _load_guide(s, opts, dict(row.config), "cpu")
    return runner.sample(opts)


def _stored_items(dataset_ref):
    from genloom.db.engine import get_engine

    with get_engine().connect() as conn:
        return conn.execute(sa.text(
            """
            SELECT i.origin, i.model_id, i.run_id, i.metadata, m.name || '@' || m.version AS model, r.params
            FROM items i JOIN dataset_members dm ON dm.item_id = i.id
            JOIN dataset_versions v ON v.id = dm.version_id JOIN datasets d ON d.id = v.dataset_id
            JOIN models m ON m.id = i.model_id JOIN runs r ON r.id = i.run_id
            WHERE d.name || '@' || v.version = :ref
            """
        ), {"ref": dataset_ref}).all()


def test_vae_gan_logs_its_loss_terms_apart_and_stores_synthetic_samples(models, run):
    out = models["vae-gan"]
    assert out["model"] == "vg@1" and out["metrics"]["val_recon"] > 0
    from genloom.db.engine import get_engine

    with get_engine().connect() as conn:
        names = set(conn.execute(sa.text("SELECT DISTINCT name FROM metrics WHERE run_id = :r AND step IS NOT NULL"),
                                 {"r": out["run_id"]}).scalars())
    assert {"recon", "kl", "adv", "loss_d", "d_accuracy", "d_skipped"} <= names
    shown = run("models", "show", "vg@1")
    assert shown["architecture"] == "vae-gan" and shown["config"]["adversarial"]["d_channels"] == 8
    stored = run("sample", "vg@1", "--n", "3", "--store", "--into", "vg-samples")
    rows = _stored_items(stored["dataset"])
    assert len(rows) == 3 and {r.origin for r in rows} == {"synthetic"} and {r.model for r in rows} == {"vg@1"}


def test_latent_diffusion_decodes_with_its_autoencoder_and_records_both_models(models, run):
    out = models["latent"]
    shown = run("models", "show", out["model"])
    assert shown["config"]["autoencoder"]["model"] == "vg@1" and shown["config"]["diffusion"]["image_size"] == 4
    samples = _sample(out["model"], n=2, steps=3, prompt="a handwritten seven")
    assert samples.images.shape == (2, 1, 8, 8) and 0 <= samples.images.min() and samples.images.max() <= 1
    stored = run("sample", out["model"], "--n", "2", "--steps", "3", "--prompt", "a handwritten seven",
                 "--store", "--into", "ld-samples")
    rows = _stored_items(stored["dataset"])
    assert {r.model for r in rows} == {"ld@1"} and {r.origin for r in rows} == {"synthetic"}
    assert all(r.metadata["lineage"]["autoencoder"]["model"] == "vg@1" for r in rows)
    assert rows[0].params["lineage"]["autoencoder"]["model"] == "vg@1"


def test_latent_diffusion_refuses_an_autoencoder_whose_latents_do_not_fit(models, run):
    cli = run.raw
    bad = cli("train", "latent-diffusion", "--dataset", "digits", "--autoencoder", "ae@1", "--set", "latent_size=3",
              "--steps", "1", *TINY_LDM)
    assert bad.exit_code != 0
    assert "autoencoder ae@1 has 4×4 latents (latent_dim=16) but this latent diffusion model expects 3×3" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    not_ae = cli("train", "latent-diffusion", "--dataset", "digits", "--autoencoder", "c@1", "--steps", "1")
    assert not_ae.exit_code != 0 and "c@1 is a clip model: use a vae or vae-gan" in not_ae.stderr
    missing = cli("train", "latent-diffusion", "--dataset", "digits", "--steps", "1")
    assert missing.exit_code != 0 and "needs --autoencoder" in missing.stderr
    elsewhere = cli("train", "vae", "--dataset", "digits", "--autoencoder", "ae@1", "--steps", "1")
    assert elsewhere.exit_code != 0 and "vae does not support --autoencoder" in elsewhere.stderr


def test_eval_clip_reports_retrieval_accuracy_as_an_evaluate_run(models, run):
    result = run("eval", "clip", "c@1", "--dataset", "digits", "--split", "test")
    m = result["metrics"]
    assert m["n_images"] == 180
    # 40 steps on digits already retrieve far above chance (10 %)
    assert m["image_to_text_top1"] > 0.3 and 0 <= m["text_to_image_top1"] <= 1
    from genloom.db.engine import get_engine

    with get_engine().connect() as conn:
        kind = conn.execute(sa.text("SELECT kind FROM runs WHERE id = :r"), {"r": result["run_id"]}).scalar()
    assert kind == "evaluate"


# Latent guidance flows back through the decoder, which shrinks the gradient: a larger scale.
@pytest.mark.parametrize("model, scale", [("d@1", 100.0), ("ld@1", 1000.0)])
def test_guide_scale_zero_is_unguided_bit_for_bit_and_guidance_raises_similarity(models, run, model, scale):
    prompt = "a handwritten seven"
    plain = _sample(model, n=4, seed=3, steps=5, prompt=prompt) if model == "ld@1" else None
    if plain is None:  # an unconditional model: no prompt without --guide
        plain = _sample(model, n=4, seed=3, steps=5)
    zero = _sample(model, n=4, seed=3, steps=5, prompt=prompt, guide="clip:c@1", guide_scale=0.0)
    assert torch.equal(plain.images, zero.images)
    guided = _sample(model, n=4, seed=3, steps=5, prompt=prompt, guide="clip:c@1", guide_scale=scale)
    assert guided.metadata[0]["guide"] == "clip:c@1" and guided.metadata[0]["guide_scale"] == scale

    from genloom.db.engine import session_scope
    from genloom.jobs.models import load_model

    with session_scope() as s:
        _, _, clip = load_model(s, "c@1", "cpu")
    text = clip.embed_texts([prompt])
    sim = lambda images: float((clip.embed_images(images) @ text.T).mean())  # noqa: E731
    assert sim(guided.images) > sim(plain.images) + 0.05


def test_guided_samples_name_the_clip_model_in_their_lineage(models, run):
    stored = run("sample", "d@1", "--n", "2", "--steps", "3", "--prompt", "a handwritten seven",
                 "--guide", "clip:c", "--guide-scale", "5", "--store", "--into", "guided")
    rows = _stored_items(stored["dataset"])
    assert {r.model for r in rows} == {"d@1"}
    assert all(r.metadata["lineage"]["guide"]["model"] == "c@1" for r in rows)
    assert rows[0].params["guide"] == "clip:c"


@pytest.mark.parametrize("args, message", [
    (["d@1", "--guide", "clip:c@1"], "--guide needs --prompt"),
    (["d@1", "--guide-scale", "2"], "--guide-scale needs --guide clip:NAME[@V]"),
    (["d@1", "--guide", "c@1", "--prompt", "x"], "expected clip:NAME[@V]"),
    (["d@1", "--guide", "clip:d@1", "--prompt", "x"], "d@1 is a diffusion model, not clip"),
    (["d@1", "--guide", "clip:c@1", "--prompt", "x", "--guide-scale", "-1"], "--guide-scale must be ≥ 0"),
    (["vg@1", "--guide", "clip:c@1", "--prompt", "x"], "vae-gan models do not support --guide"),
    (["c@1"], "clip models do not sample"),
])
def test_bad_guide_options_are_one_line_errors(models, run, args, message):
    r = run.raw("sample", *args, "--n", "1")
    assert r.exit_code != 0 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- captions


def _caption_table(dataset_ref):
    from genloom.architectures.captions import CaptionTable
    from genloom.datasets.versions import resolve_version
    from genloom.db.engine import session_scope

    with session_scope() as s:
        version = resolve_version(s, dataset_ref)
        vid, labels = version.id, sorted(
            {lab for (lab,) in s.execute(sa.text(
                "SELECT DISTINCT label FROM (SELECT i.label FROM dataset_members m JOIN items i ON i.id = m.item_id "
                "WHERE m.version_id = :v) AS l WHERE label IS NOT NULL"), {"v": version.id})},
            key=int,
        )
    return vid, CaptionTable(vid, labels, "cpu")


def test_imported_caption_column_is_what_clip_and_text_diffusion_train_on(run, tmp_path):
    """Unlabelled images captioned from a CSV column: training reads the captions (without them it
    has nothing to condition on and refuses), and the text each item is embedded with is its own caption."""
    import numpy as np
    from PIL import Image

    from genloom.architectures.captions import embed_prompts

    folder = tmp_path / "shapes"
    folder.mkdir()
    rows = ["file,text"]
    for i in range(24):
        img = np.zeros((16, 16), dtype=np.uint8)
        bright = i % 2 == 0
        img[4:12, 4:12] = 255 if bright else 60
        img[0, 0] = i  # distinct content per file
        Image.fromarray(img).save(folder / f"{i:02d}.png")
        rows.append(f"{i:02d}.png,{'a bright square' if bright else 'a dim square'}")
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")

    imported = run("datasets", "import", "images", str(folder), "--name", "shapes",
                   "--captions", str(tmp_path / "captions.csv"), "--caption-column", "text")
    assert imported["items"] == 24
    clip = run("train", "clip", "--dataset", "shapes", "--steps", "2", "--name", "shape-clip",
               "--set", "channels=8", "--batch-size", "8")
    assert clip["model"] == "shape-clip@1"
    diffusion = run("train", "diffusion", "--dataset", "shapes", "--text-conditional", "--steps", "1",
                    "--name", "shape-diff", "--set", "base_channels=8", "--set", "channel_mults=1,2",
                    "--set", "attention=false", "--batch-size", "8")
    assert diffusion["model"] == "shape-diff@1"

    from genloom.db.engine import get_engine

    with get_engine().connect() as conn:
        stored = dict(conn.execute(sa.text(
            "SELECT m.item_id, i.metadata->>'source' FROM dataset_members m JOIN items i ON i.id = m.item_id "
            "JOIN dataset_versions v ON v.id = m.version_id JOIN datasets d ON d.id = v.dataset_id "
            "WHERE d.name = 'shapes'")).all())
    _, table = _caption_table("shapes")
    ids = sorted(stored)
    text, groups = table.lookup(ids, None)
    wanted = ["a bright square" if int(stored[i][:2]) % 2 == 0 else "a dim square" for i in ids]
    assert torch.allclose(text, embed_prompts(wanted), atol=1e-5)
    assert len(set(groups.tolist())) == 2


def test_bad_caption_files_are_one_line_errors(run, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    Image.new("L", (8, 8)).save(folder / "a.png")
    (tmp_path / "c.csv").write_text("file,caption\nmissing.png,a cat\n")
    r = run.raw("datasets", "import", "images", str(folder), "--name", "bad", "--captions", str(tmp_path / "c.csv"))
    assert r.exit_code != 0 and "not under" in r.stderr
    (tmp_path / "c.jsonl").write_text('{"path": "a.png"}\n')
    r = run.raw("datasets", "import", "images", str(folder), "--name", "bad", "--captions", str(tmp_path / "c.jsonl"))
    assert r.exit_code != 0 and "no 'caption' and 'file' columns" in r.stderr


def test_caption_template_seals_a_new_version_and_leaves_the_old_one_unchanged(models, run):
    from genloom.architectures.captions import embed_prompts
    from genloom.datasets.captions import item_captions
    from genloom.db.engine import session_scope

    before = run("datasets", "show", "digits")
    out = run("datasets", "caption", "digits", "--template", "digit number {label} by hand ({word})")
    assert out["source"] == before["name"] + "@" + str(before["version"])
    assert out["dataset"] == f"digits@{before['version'] + 1}" and out["items"] == before["items"]
    after = run("datasets", "show", out["source"])
    assert after == before  # the old version: same counts, still no captions
    old_id, _ = _caption_table(out["source"])
    new_id, table = _caption_table(out["dataset"])
    with session_scope() as s:
        assert item_captions(s, old_id) == {}
        captions = item_captions(s, new_id)
        labels = dict(s.execute(sa.text(
            "SELECT m.item_id, i.label FROM dataset_members m JOIN items i ON i.id = m.item_id "
            "WHERE m.version_id = :v"), {"v": new_id}).all())
        manifests = dict(s.execute(sa.text(
            "SELECT id, manifest_sha256 FROM dataset_versions WHERE id IN (:a, :b)"), {"a": old_id, "b": new_id}).all())
    assert len(captions) == before["items"]
    seven = next(i for i, lab in labels.items() if lab == "7")
    assert captions[seven] == "digit number 7 by hand (seven)"
    assert manifests[old_id] != manifests[new_id]  # captions are part of what a version is
    # the stored caption, not a phrasing of the label, is what a text model is trained on
    text, _ = table.lookup([seven], torch.tensor([7]))
    assert torch.allclose(text, embed_prompts([captions[seven]]), atol=1e-5)
    diff = run("datasets", "diff", out["source"], out["dataset"])
    assert diff["recaptioned"] == before["items"] and diff["unchanged"] == 0
    bad = run.raw("datasets", "caption", "digits", "--template", "no fields")
    assert bad.exit_code != 0 and "named fields" in bad.stderr
