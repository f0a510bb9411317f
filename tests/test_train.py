"""The training-job framework with the VAE and the GAN, on digits (CPU, tiny networks, a few steps)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import sqlalchemy as sa

from genloom.errors import JobInterrupted

from conftest import REPO_ROOT

TINY_VAE = ["--set", "channels=8", "--set", "latent_dim=4", "--batch-size", "32"]
TINY_GAN = ["--set", "channels=8", "--set", "z_dim=8", "--batch-size", "32"]


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny networks gain nothing from intra-op threads, and on a busy 2-core machine
    # spinning OpenMP threads make each step several times slower.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def digits(cli, db_url):
    r = cli("datasets", "import", "digits", "--json")
    assert r.exit_code == 0, r.stderr
    return r.json()


def _train(cli, arch, *args):
    r = cli("train", arch, "--dataset", "digits", *args, "--json")
    assert r.exit_code == 0, r.stderr
    return r.json()


def test_vae_trains_registers_samples_stores_with_lineage(cli, digits, engine, tmp_path):
    out = _train(cli, "vae", "--steps", "6", "--name", "v", *TINY_VAE)
    assert out["model"] == "v@1" and out["metrics"]["val_neg_elbo"] > 0
    with engine.connect() as conn:
        run = conn.execute(sa.text("SELECT status, model_id, input_version_id, device, code_version, params FROM runs WHERE id = :r"),
                           {"r": out["run_id"]}).one()
        model = conn.execute(sa.text("SELECT id, run_id, sha256, size_bytes, format FROM models WHERE name = 'v'")).one()
        logged = conn.execute(sa.text("SELECT count(DISTINCT step) FROM metrics WHERE run_id = :r AND name = 'loss'"),
                              {"r": out["run_id"]}).scalar()
    assert run.status == "succeeded" and run.model_id == model.id and model.run_id == out["run_id"]
    assert run.device == "cpu" and run.code_version and run.params["steps"] == 6
    assert model.size_bytes > 0 and len(model.sha256) == 64 and model.format == "torch"
    assert logged == 6

    # Same seed → same samples; another seed → others.
    a = cli("sample", "v", "--n", "8", "--seed", "3", "--out", tmp_path / "a.png", "--json")
    b = cli("sample", "v", "--n", "8", "--seed", "3", "--out", tmp_path / "b.png", "--json")
    c = cli("sample", "v", "--n", "8", "--seed", "4", "--out", tmp_path / "c.png", "--json")
    assert a.exit_code == 0, a.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()

    r = cli("sample", "v", "--n", "5", "--store", "--into", "digits", "--json")
    assert r.exit_code == 0, r.stderr
    stored = r.json()
    assert stored["dataset"] == "digits@2" and len(stored["items"]) == 5
    shown = cli("datasets", "show", "digits@2", "--json").json()
    assert shown["parent"] == "digits@1" and shown["created_by_run"] == stored["run_id"]
    assert shown["by_origin"] == {"real": 1797, "synthetic": 5} and shown["items"] == 1802
    # The same seeded sampling again adds nothing: no digits@3 sealed as a copy of digits@2.
    again = cli("sample", "v", "--n", "5", "--store", "--into", "digits", "--json")
    assert again.exit_code == 0, again.stderr
    assert again.json()["dataset"] == "digits@2" and again.json()["unchanged"] is True
    with engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT count(*) FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id "
                                        "WHERE d.name = 'digits'")).scalar()
    assert versions == 2
    # The whole lineage in one query: item → sampling run → model → training run → input version.
    with engine.connect() as conn:
        chain = conn.execute(sa.text(
            """
            SELECT DISTINCT sr.kind, m.name || '@' || m.version, tr.kind, tr.status, d.name || '@' || dv.version
            FROM items i
            JOIN runs sr ON sr.id = i.run_id
            JOIN models m ON m.id = i.model_id
            JOIN runs tr ON tr.id = m.run_id
            JOIN dataset_versions dv ON dv.id = tr.input_version_id
            JOIN datasets d ON d.id = dv.dataset_id
            WHERE i.origin = 'synthetic'
            """
        )).all()
        view = conn.execute(sa.text("SELECT DISTINCT model, training_dataset FROM item_lineage WHERE origin = 'synthetic'")).all()
    assert chain == [("sample", "v@1", "train", "succeeded", "digits@1")]
    assert view == [("v@1", "digits@1")]

    # Anomaly scores are per-item metric rows; the top list is sorted.
    r = cli("score", "v", "--dataset", "digits@1", "--split", "val", "--top", "5", "--json")
    assert r.exit_code == 0, r.stderr
    scored = r.json()
    assert scored["scored"] == 180 and [t["score"] for t in scored["top"]] == sorted((t["score"] for t in scored["top"]), reverse=True)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM metrics WHERE run_id = :r AND item_id IS NOT NULL"),
                            {"r": scored["run_id"]}).scalar()
    assert rows == 180
    ids = [t["item_id"] for t in scored["top"][:2]]
    r = cli("sample", "v", "--interpolate", ids[0], ids[1], "--steps", "6", "--out", tmp_path / "i.png", "--json")
    assert r.exit_code == 0, r.stderr
    from PIL import Image

    assert Image.open(tmp_path / "i.png").size[0] > Image.open(tmp_path / "i.png").size[1] * 4  # one row of 6

    listed = cli("models", "list", "--json").json()
    assert [m["model"] for m in listed] == ["v@1"] and listed[0]["dataset"] == "digits@1"
    shown = cli("models", "show", "v", "--json").json()
    assert shown["run_id"] == out["run_id"] and "val_neg_elbo" in shown["metrics"]


def test_conditional_gan_wgan_gp_samples_carry_labels(cli, digits, engine, tmp_path):
    out = _train(cli, "gan", "--steps", "3", "--conditional", "--set", "loss=wgan-gp", "--set", "spectral_norm=true",
                 "--name", "g", *TINY_GAN)
    metrics = out["metrics"]
    for key in ("train_loss_g", "train_loss_d", "train_critic_grad_norm", "train_diversity", "train_gradient_penalty", "val_mmd"):
        assert key in metrics, key
    with engine.connect() as conn:
        params = conn.execute(sa.text("SELECT params FROM runs WHERE id = :r"), {"r": out["run_id"]}).scalar()
        critic_norms = conn.execute(sa.text("SELECT count(*) FROM metrics WHERE run_id = :r AND name = 'critic_grad_norm'"),
                                    {"r": out["run_id"]}).scalar()
    assert params["hparams"]["loss"] == "wgan-gp" and params["lr"] == 1e-4  # WGAN-GP's own default LR
    assert critic_norms == 3
    r = cli("sample", "g", "--n", "4", "--label", "7", "--store", "--into", "synthetic-sevens", "--json")
    assert r.exit_code == 0, r.stderr
    shown = cli("datasets", "show", "synthetic-sevens", "--json").json()
    assert shown["by_label"] == {"7": 4} and shown["by_origin"] == {"real": 0, "synthetic": 4} and shown["parent"] is None
    r = cli("sample", "g", "--n", "10", "--out", tmp_path / "g.png", "--store", "--into", "synthetic-sevens", "--json")
    shown = cli("datasets", "show", "synthetic-sevens", "--json").json()
    assert shown["version"] == 2 and shown["parent"] == "synthetic-sevens@1"
    assert shown["by_label"] == {str(d): 1 for d in range(10)} | {"7": 5}  # unlabelled requests cycle the classes


def _interrupt_at(step_to_stop):
    def callback(step, metrics):
        if step == step_to_stop:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("arch,tiny", [("vae", TINY_VAE), ("gan", TINY_GAN)])
def test_interrupted_run_resumes_from_its_checkpoint(digits, engine, arch, tiny):
    from genloom.jobs.train import train
    from genloom.training.options import TrainOptions, parse_set

    sets = parse_set([v for i, v in enumerate(tiny) if i % 2 and tiny[i - 1] == "--set"])

    def opts(resume=False):
        return TrainOptions(dataset="digits", steps=8, checkpoint_every=2, log_every=1, batch_size=32, name="r",
                            resume=resume, hparams=dict(sets))

    with pytest.raises(JobInterrupted):  # the Ctrl-C, once the job has recorded what it kept
        # Stopped during step 6: step 5's metrics are logged, the newest checkpoint is step 4's.
        train(arch, opts(), callbacks=[_interrupt_at(6)])
    with engine.connect() as conn:
        run = conn.execute(sa.text("SELECT id, status, error FROM runs WHERE kind = 'train'")).one()
        checkpoints = conn.execute(sa.text("SELECT step FROM run_checkpoints WHERE run_id = :r ORDER BY step"),
                                   {"r": run.id}).scalars().all()
        models = conn.execute(sa.text("SELECT count(*) FROM models")).scalar()
    assert run.status == "interrupted" and "--resume" in run.error
    assert checkpoints == [2, 4] and models == 0  # never a half-registered model

    result = train(arch, opts(resume=True))
    assert result.run_id == run.id and result.resumed_from_step == 4 and result.steps == 8
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM runs WHERE id = :r"), {"r": run.id}).scalar()
        loss_steps = conn.execute(sa.text("SELECT step FROM metrics WHERE run_id = :r AND name = 'loss' ORDER BY step"),
                                  {"r": run.id}).scalars().all()
        finals = conn.execute(sa.text("SELECT count(*) FROM metrics WHERE run_id = :r AND step IS NULL AND name = 'loss'"),
                              {"r": run.id}).scalar()
    # Step 5 was logged before the interrupt and again after resuming from step 4: one row, the redone one.
    assert status == "succeeded" and loss_steps == [1, 2, 3, 4, 5, 6, 7, 8] and finals <= 1


def test_resume_refuses_a_run_whose_process_is_alive(digits, engine):
    import socket

    from genloom.errors import BadInput
    from genloom.jobs.train import train
    from genloom.training.options import TrainOptions

    def opts(resume=False):
        return TrainOptions(dataset="digits", steps=4, checkpoint_every=2, batch_size=32, name="live", resume=resume,
                            hparams={"channels": "8", "latent_dim": "4"})

    with pytest.raises(JobInterrupted):  # the Ctrl-C, once the job has recorded what it kept
        train("vae", opts(), callbacks=[_interrupt_at(3)])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    cases = [  # (host, pid, what --resume says)
        (socket.gethostname(), os.getpid(), f"is still running (process {os.getpid()})"),  # this very process: alive
        ("elsewhere", 1, "is marked running on host elsewhere"),
        (socket.gethostname(), int(dead.stdout), None),  # that process has exited: a stale run, resumable
    ]
    for host, pid, message in cases:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE runs SET status = 'running', host = :h, pid = :p, started_at = now() "
                                 "WHERE kind = 'train'"), {"h": host, "p": pid})
        if message:
            with pytest.raises(BadInput, match=re.escape(message)):
                train("vae", opts(resume=True))
        else:
            assert train("vae", opts(resume=True)).resumed_from_step == 2


def test_killed_process_leaves_a_resumable_run(digits, db_url, engine, tmp_path):
    """A real process killed mid-run (SIGTERM, as torchrun or a scheduler sends) is resumable from the CLI."""
    import time

    env = {**os.environ, "DATABASE_URL": db_url, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO_ROOT / "cli.py"), "train", "vae", "--dataset", "digits", "--steps", "100000",
           "--checkpoint-every", "2", "--eval-every", "100000", "--name", "killed", *TINY_VAE]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            with engine.connect() as conn:
                if conn.execute(sa.text("SELECT count(*) FROM run_checkpoints")).scalar():
                    break
            time.sleep(0.5)
        proc.terminate()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM runs WHERE kind = 'train'")).scalar()
        assert conn.execute(sa.text("SELECT count(*) FROM models")).scalar() == 0
    assert status == "interrupted"
    r = subprocess.run([sys.executable, str(REPO_ROOT / "cli.py"), "train", "vae", "--dataset", "digits", "--steps", "8",
                        "--name", "killed", "--resume", "--json", *TINY_VAE], env=env, cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=300)
    # The original budget (100000 steps) is the interrupted run's; --steps on resume sets the new end.
    assert r.returncode == 0, r.stderr


def test_bad_inputs_are_one_line_errors(cli, digits, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be\n", encoding="utf-8")
    assert cli("datasets", "import", "text", corpus, "--name", "words").exit_code == 0
    _train(cli, "vae", "--steps", "1", "--name", "v", *TINY_VAE)
    cases = [
        (["train", "vae", "--dataset", "nope"], "no dataset 'nope'"),
        (["train", "vae", "--dataset", "digits@7"], "has no version 7"),
        (["train", "vae", "--dataset", "words"], "vae trains on image datasets, but words@1 holds text items"),
        (["train", "gan", "--dataset", "digits", "--resume", "--name", "never"], "nothing to resume for 'never'"),
        (["train", "vae", "--dataset", "digits", "--set", "bogus=1"], "unknown --set key 'bogus'"),
        (["train", "vae", "--dataset", "digits", "--set", "beta=lots"], "--set beta=lots: expected float"),
        (["train", "vae", "--dataset", "digits", "--text-conditional"], "vae does not support --text-conditional"),
        (["train", "vae", "--dataset", "digits", "--steps", "5", "--epochs", "1"], "give --steps or --epochs, not both"),
        (["train", "mlp", "--dataset", "digits"], "unknown architecture 'mlp'"),
        (["sample", "v", "--n", "0"], "--n must be at least 1"),
        (["sample", "v", "--prompt", "a seven"], "vae models do not support --prompt"),
        (["sample", "v", "--label", "3"], "--label needs a class-conditional model"),
        (["sample", "nope"], "no model 'nope'"),
        (["sample", "v", "--store"], "--store needs --into"),
        (["score", "v", "--dataset", "words"], "holds text items but v@1 was trained on 1×8×8"),
    ]
    for args, message in cases:
        r = cli(*args)
        assert r.exit_code == 1, (args, r.stdout, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert r.stderr.strip().count("\n") == 0, (args, r.stderr)


def test_empty_split_and_mismatched_sizes_are_refused(cli, digits, session):
    import numpy as np

    from genloom.datasets.items import image_item, put_items
    from genloom.datasets.versions import add_members, create_version, seal_version

    ids = put_items(session, [image_item(np.zeros((8, 8), np.uint8)), image_item(np.ones((6, 6), np.uint8))])
    v = create_version(session, "mixed", modality="image")
    add_members(session, v, [(ids[0], "train"), (ids[1], "val")])
    seal_version(session, v)
    v = create_version(session, "valonly", modality="image")
    add_members(session, v, [(ids[0], "val")])
    seal_version(session, v)
    session.commit()
    r = cli("train", "vae", "--dataset", "mixed")
    assert r.exit_code == 1 and "mismatched sizes" in r.stderr and "--resize" in r.stderr
    r = cli("train", "gan", "--dataset", "valonly")
    assert r.exit_code == 1 and "train split of valonly@1 is empty" in r.stderr


def test_ddp_two_processes_with_gloo(digits, db_url, engine):
    env = {**os.environ, "DATABASE_URL": db_url, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",  # a free port, chosen by torchrun
         str(REPO_ROOT / "cli.py"), "train", "gan", "--dataset", "digits", "--steps", "3", "--name", "ddp", "--json", *TINY_GAN],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT status, device, params->>'world_size' FROM runs WHERE kind = 'train'")).all()
        models = conn.execute(sa.text("SELECT name, version FROM models")).all()
    # One run and one model, written by rank 0 alone.
    assert runs == [("succeeded", "cpu×2", "2")] and models == [("ddp", 1)]


def test_out_of_memory_suggests_a_smaller_batch(cli, digits, engine, monkeypatch):
    import torch

    from genloom.architectures import vae

    def boom(self, batch, step):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(vae.VAE, "train_step", boom)
    r = cli("train", "vae", "--dataset", "digits", "--batch-size", "64", "--steps", "2")
    assert r.exit_code == 1 and "out of memory on cpu at batch size 64: try --batch-size 32" in r.stderr
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM runs WHERE kind = 'train'")).scalar() == "failed"
        assert conn.execute(sa.text("SELECT count(*) FROM models")).scalar() == 0


def test_demo_step_trains_demo_vae_and_writes_a_grid(db_url, tmp_path):
    from genloom.demo_steps import DemoContext, training

    ctx = DemoContext(out_dir=tmp_path, quick=True)
    first = training.run(ctx)
    assert first["model"] == "demo-vae@1" and first["dataset"] == "digits@1"
    assert (tmp_path / "demo-vae-samples.png").stat().st_size > 0
    again = training.run(ctx)  # re-running is safe: same dataset version, a new model version
    assert again["dataset"] == "digits@1" and again["model"] == "demo-vae@2"


def test_cuda_device_gets_the_index_set_device_needs():
    # A bare 'cuda' made torch.cuda.set_device raise on the first GPU run; it must become cuda:LOCAL_RANK.
    from genloom.training.context import indexed_device as _indexed_device

    assert _indexed_device("cuda", 0) == "cuda:0"
    assert _indexed_device("cuda", 3) == "cuda:3"  # torchrun rank 3 on a multi-GPU machine
    assert _indexed_device("cuda:1", 0) == "cuda:1"  # an explicit --device keeps its index
    assert _indexed_device("cpu", 2) == "cpu"


@pytest.mark.parametrize("keep_best", [True, False])
def test_keep_best_registers_the_weights_of_the_best_validation_pass(digits, engine, monkeypatch, keep_best):
    import io

    import torch

    from genloom.architectures.vae import VAE
    from genloom.db.engine import session_scope
    from genloom.jobs.train import train
    from genloom.registry import load_checkpoint, resolve_model
    from genloom.training.options import TrainOptions

    # A scripted validation curve: passes at steps 2, 4, 6, then the final one (and a re-evaluation).
    curve = iter([5.0, 1.0, 3.0, 6.0, 1.0])
    weights_seen: list[dict] = []

    def scripted_evaluate(self, source):
        weights_seen.append({k: v.detach().clone() for k, v in self.net.state_dict().items()})
        return {"val_neg_elbo": next(curve)}

    monkeypatch.setattr(VAE, "evaluate", scripted_evaluate)
    opts = TrainOptions(dataset="digits", steps=8, eval_every=2, batch_size=32, name="kb", keep_best=keep_best,
                        hparams={"channels": "8", "latent_dim": "4"})
    result = train("vae", opts)
    with session_scope() as s:
        row = resolve_model(s, result.model)
        registered = torch.load(io.BytesIO(load_checkpoint(s, row)), weights_only=True)
        kept_step = row.metadata_["kept_step"]

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    if keep_best:  # the last weights (6.0) are worse than step 4's (1.0): step 4's are registered
        assert kept_step == 4 and result.kept_step == 4 and len(weights_seen) == 5
        assert same(registered, weights_seen[1]) and not same(registered, weights_seen[3])
        assert result.metrics["val_neg_elbo"] == 1.0 and result.metrics["best_val_neg_elbo"] == 1.0
    else:
        assert kept_step == 8 and len(weights_seen) == 4
        assert same(registered, weights_seen[3]) and not same(registered, weights_seen[1])


def test_checkpoints_are_written_in_the_background_yet_never_lost_or_silently_failed(digits, engine, monkeypatch):
    import time

    from genloom.jobs import train as trainer
    from genloom.training import checkpoints
    from genloom.training.options import TrainOptions

    real_save = checkpoints.save_checkpoint

    def slow_save(*args, **kwargs):  # a database slower than the training steps
        time.sleep(0.5)
        real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "save_checkpoint", slow_save)
    opts = TrainOptions(dataset="digits", steps=8, checkpoint_every=2, batch_size=32, name="bg",
                        hparams={"channels": "8", "latent_dim": "4"})
    with pytest.raises(JobInterrupted):  # the Ctrl-C, once the job has recorded what it kept
        trainer.train("vae", opts, callbacks=[_interrupt_at(5)])
    with engine.connect() as conn:
        steps = conn.execute(sa.text("SELECT step FROM run_checkpoints ORDER BY step")).scalars().all()
    assert steps == [2, 4]  # the write in flight at the interrupt landed

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_checkpoint", failing_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.train("vae", TrainOptions(dataset="digits", steps=8, checkpoint_every=2, batch_size=32, name="bg2",
                                          hparams={"channels": "8", "latent_dim": "4"}))
    with engine.connect() as conn:
        run = conn.execute(sa.text("SELECT status, error FROM runs WHERE params->>'name' = 'bg2'")).one()
        models = conn.execute(sa.text("SELECT count(*) FROM models WHERE name = 'bg2'")).scalar()
    assert run.status == "failed" and "disk full" in run.error and models == 0
