"""The GPU speed suite (issue 18): genloom against its bare baselines, side by side in one run.

    bash bench/gpu_pack.sh                  # here, once: wheels + data into .whl/ and .gpu/
    bash bench/gpu_suite.sh                 # on the GPU machine: JSON per check + summary.md in $OUT
    bash bench/gpu_suite.sh --cpu-smoke     # every check for a few steps on a CPU (tests use it)

This module holds the checks; gpu_suite.sh runs each in a process of its own under a time
limit, so one that fails or hangs stops none of the others, then writes the summary:

    python bench/gpu_suite.py setup --out DIR [--smoke]        database up and migrated, MiniLM unpacked
    python bench/gpu_suite.py CHECK --out DIR [--smoke]        DIR/CHECK.json (rewritten after each part)
    python bench/gpu_suite.py mark CHECK --out DIR --rc N      records a check that failed or ran out of time
    python bench/gpu_suite.py summary --out DIR                DIR/summary.md
    python bench/gpu_suite.py pack-data --dest .gpu            the data subsets gpu_pack.sh carries

Checks (each: the bare baseline and genloom on the same device, in the same process):
- embedding:  MiniLM chunks/s, bare `SentenceTransformer.encode` vs `ingest_documents` of the same
              SciFact subset (chunking, embedding, COPY, BM25 postings, HNSW, transactions).
- images:     VAE and diffusion steps/s, a bare loop over an in-memory tensor vs `genloom train`
              reading from the store (median of logged windows, the first one left out).
- training:   nanoGPT's GPU Shakespeare recipe, reference loop vs `genloom train transformer`,
              both with torch.compile, a fixed time budget each: ms/iteration without compile or
              evaluation, iterations done, best val loss (the same estimator on both sides).
- generation: the Qwen2-0.5B-shaped random model in bf16 (bench/generation.py): plain `generate`
              with a static cache vs genloom's logged `ask` at batch 1 and at 8 and 32 concurrent.

Each JSON holds `rows` (measure, bare, genloom, genloom/bare, target) for the summary table,
the check's own `results`, its `config`, and `env` (device, versions, git sha).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform as host_platform
import statistics
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "platform", REPO, REPO / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

CHECKS = ("embedding", "images", "training", "generation")
MINILM_DIR = Path(os.environ.get("GENLOOM_SUITE_MINILM", "/tmp/genloom-suite-minilm"))
PACK_LIMITS = {"scifact_docs": 2000, "mnist_train": 10000, "mnist_test": 1000}

# Sizes per mode. The GPU budgets (seconds) add up, with set-up, to under 9 minutes: gpu_suite.sh
# gives each check its own limit and the last one whatever is left.
CONFIG = {
    "gpu": {
        "embedding": {"batch_size": 64, "large_batch": 256, "repeats": 3, "max_docs": None},
        "images": {"batch_size": 128, "steps": 5000, "log_every": 50, "eval_every": 1000, "checkpoint_every": 500,
                   "budget_s": 12.0, "vae": {"channels": 32, "latent_dim": 32},
                   "diffusion": {"base_channels": 32, "channel_mults": "1,2,2"}},
        "training": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "batch_size": 64, "lr": 1e-3,
                     "dropout": 0.2, "warmup": 100, "iters": 5000, "eval_interval": 250, "eval_iters": 200,
                     "log_every": 50, "compile": True, "budget_s": 70.0},
        "generation": {"config": "qwen2-0.5b", "new_tokens": 64, "repeats": 3, "concurrency": [32, 8]},  # 32 (the target) first
    },
    "cpu-smoke": {
        "embedding": {"batch_size": 16, "large_batch": 32, "repeats": 1, "max_docs": 12},
        "images": {"batch_size": 32, "steps": 12, "log_every": 4, "eval_every": 8, "checkpoint_every": 6,
                   "budget_s": 20.0, "vae": {"channels": 8, "latent_dim": 4},
                   "diffusion": {"base_channels": 8, "channel_mults": "1,2"}},
        "training": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 4, "lr": 1e-3,
                     "dropout": 0.0, "warmup": 2, "iters": 16, "eval_interval": 8, "eval_iters": 2,
                     "log_every": 4, "compile": False, "budget_s": 20.0},
        "generation": {"config": "tiny-llama", "new_tokens": 8, "repeats": 1, "concurrency": [2, 4]},
    },
}

# The targets, genloom / bare on the same GPU (None: measured, no target set).
TARGETS = {
    "embedding_chunks": (">=", 0.85),
    "train_ms_per_iter": ("<=", 1.05),
    "gen_batch1": (">=", 1.0),
    "gen_overhead": ("<=", 0.05),
    "gen_concurrent32": (">=", 1.0),
}


# --------------------------------------------------------------------------- the report each check writes


def git_sha(data: Path | None) -> dict:
    """The commit measured: git's answer where .git exists, else the one gpu_pack.sh recorded."""
    try:
        if not (REPO / ".git").exists():  # the GPU machine's copy has no .git; never ask a folder above
            raise OSError("no .git")
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=False, timeout=10).stdout.strip()
        if sha:
            return {"git_sha": sha, "git_dirty": bool(dirty), "source": "git"}
    except (OSError, subprocess.SubprocessError):
        pass
    manifest = (data / "manifest.json") if data else None
    if manifest and manifest.is_file():
        info = json.loads(manifest.read_text())
        return {"git_sha": info.get("git_sha"), "git_dirty": info.get("git_dirty"), "source": "gpu_pack.sh manifest"}
    return {"git_sha": None, "source": "unknown (no .git, no pack manifest)"}


def environment(device: str, data: Path | None) -> dict:
    import importlib.metadata as md

    import torch

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    cuda = device.startswith("cuda")
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name() if cuda else f"{host_platform.machine()} CPU",
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": host_platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "transformers": version("transformers"),
        "sentence_transformers": version("sentence-transformers"),
        "load_avg_start": round(os.getloadavg()[0], 2),
        "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **git_sha(data),
    }


class Report:
    """One check's JSON, rewritten after each part so a time limit keeps what was measured."""

    def __init__(self, check: str, out: Path, mode: str, device: str, data: Path | None):
        self.path = out / f"{check}.json"
        self.t0 = time.perf_counter()
        self.doc = {"check": check, "status": "partial", "mode": mode, "env": environment(device, data),
                    "config": dict(CONFIG[mode].get(check, {})), "results": {}, "rows": []}
        self.save()

    def row(self, key: str, measure: str, unit: str, bare: float | None, genloom: float, better: str) -> None:
        """A summary-table row; `better` says which way genloom/bare is good ('higher' or 'lower')."""
        ratio = genloom / bare if bare not in (None, 0) else None
        target = TARGETS.get(key)
        judged = ratio if key != "gen_overhead" else genloom  # the overhead target is a share, not a ratio
        met = None
        if target is not None and judged is not None:
            met = judged >= target[1] if target[0] == ">=" else judged <= target[1]
        self.doc["rows"].append({
            "key": key, "measure": measure, "unit": unit,
            "bare": None if bare is None else round(bare, 4), "genloom": round(genloom, 4),
            "ratio": None if ratio is None else round(ratio, 4), "better": better,
            "target": f"{target[0]} {target[1]}" if target else None, "met": met,
        })
        self.save()

    def save(self) -> None:
        self.doc["wall_s"] = round(time.perf_counter() - self.t0, 2)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.doc, indent=2, default=str))
        tmp.replace(self.path)

    def finish(self) -> None:
        self.doc["status"] = "ok"
        self.doc["env"]["load_avg_end"] = round(os.getloadavg()[0], 2)
        self.save()


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def autocast(device: str):
    """What genloom's trainer uses: bf16 autocast on CUDA, nothing elsewhere."""
    import contextlib

    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else contextlib.nullcontext()


def steady(windows: list[float]) -> float:
    """Seconds per step in the steady state: the median window, the first (warm-up, compile) left out."""
    if not windows:
        raise RuntimeError("no timing window was completed (budget shorter than one logging interval?)")
    return statistics.median(windows[1:] if len(windows) > 1 else windows)


def logged_windows(run_id: int, skip_after: set[int] = frozenset(), log_every: int = 0) -> list[float]:
    """genloom's own timing: the trainer logs `steps_per_s` for each window of `log_every`
    steps, read when it syncs with the device to log. Windows that follow a step in
    `skip_after` (an evaluation happened at its start) are left out."""
    import sqlalchemy as sa

    from genloom.db.engine import session_scope

    with session_scope() as s:
        rows = s.execute(sa.text(
            "SELECT step, value FROM metrics WHERE run_id = :r AND name = 'steps_per_s' AND step IS NOT NULL ORDER BY step"
        ), {"r": run_id}).all()
    return [1.0 / value for step, value in rows if value > 0 and (step - log_every) not in skip_after]


def logged_values(run_id: int, name: str) -> list[tuple[int | None, float]]:
    import sqlalchemy as sa

    from genloom.db.engine import session_scope

    with session_scope() as s:
        return [tuple(r) for r in s.execute(sa.text(
            "SELECT step, value FROM metrics WHERE run_id = :r AND name = :n ORDER BY step NULLS LAST"
        ), {"r": run_id, "n": name}).all()]


# --------------------------------------------------------------------------- data: the pack, or built-ins for the smoke run


def builtin_docs(n: int = 12):
    """Documents for the smoke run: genloom's sample docs plus seeded generated paragraphs."""
    import random

    from ingest.loaders import SourceDocument

    docs = []
    for path in sorted((REPO / "platform" / "genloom" / "data" / "sample_docs").iterdir()):
        docs.append(SourceDocument(external_id=path.name, title=path.stem, text=path.read_text(encoding="utf-8")))
    rng = random.Random(0)
    words = ["data", "model", "vector", "index", "query", "token", "chunk", "search", "rank", "score", "table", "row", "column"]
    while len(docs) < n:
        text = " ".join(" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(8))
        docs.append(SourceDocument(external_id=f"g{len(docs)}", title=f"Generated {len(docs)}", text=text))
    return docs


def scifact_docs(data: Path):
    from ingest.loaders import SourceDocument

    with (data / "scifact" / "corpus.jsonl").open(encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [SourceDocument(external_id=r["_id"], title=r["title"], text=r["text"]) for r in records]


def builtin_text() -> str:
    """About 20,000 characters of English for the smoke run's character model."""
    text = "\n".join(p.read_text(encoding="utf-8")
                     for p in sorted((REPO / "platform" / "genloom" / "data" / "sample_docs").iterdir()))
    return (text + "\n") * max(1, 20000 // max(1, len(text)))


def embedding_model_dir(smoke: bool) -> str:
    """The MiniLM folder: unpacked from the pack on the GPU machine, the bundled one otherwise."""
    if (MINILM_DIR / "config.json").is_file():
        return str(MINILM_DIR)
    if not smoke:
        raise RuntimeError(f"no MiniLM at {MINILM_DIR}: run `gpu_suite.py setup` with the pack in .gpu/ first")
    from genloom.embeddings import model_path

    return str(model_path(None))


# --------------------------------------------------------------------------- check: embedding


def check_embedding(r: Report, cfg: dict, device: str, data: Path | None, smoke: bool) -> None:
    import sqlalchemy as sa

    from genloom import embeddings as embedding
    from genloom.db.engine import session_scope
    from ingest.chunking import Chunker, embedding_text
    from ingest.pipeline import IngestOptions, ingest_documents

    docs = (builtin_docs() if data is None else scifact_docs(data))[: cfg["max_docs"]]
    model_dir = embedding_model_dir(smoke)
    model = embedding.get_embedder(model_dir)
    chunker = Chunker(model.tokenizer, model.max_seq_length)
    texts = [embedding_text(d.title, c.text) for d in docs for c in chunker.chunk(d.text, d.title)]
    batch = cfg["batch_size"]
    model.encode(texts[: batch * 2], batch_size=batch, normalize_embeddings=True)  # warm-up

    def bare(batch_size: int) -> float:
        """Seconds to encode every chunk (the median of `repeats` passes)."""
        times = []
        for _ in range(cfg["repeats"]):
            sync(device)
            t0 = time.perf_counter()
            model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
            sync(device)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    before = bare(batch)
    r.doc["results"].update({"source": "scifact" if data else "built-in", "documents": len(docs), "chunks": len(texts),
                             "model": model_dir, "model_dtype": str(next(model.parameters()).dtype),
                             "model_device": str(model.device), "bare_encode_s_before": round(before, 3)})
    r.save()
    name = f"gpu-suite-{uuid.uuid4().hex[:8]}"
    result = ingest_documents(docs, IngestOptions(collection=name, embedding_model=model_dir, embed_batch_size=batch))
    after = bare(batch)
    large = bare(cfg["large_batch"])
    with session_scope() as s:
        s.execute(sa.text("DELETE FROM collections WHERE name = :n"), {"n": name})
    if result.chunks != len(texts):
        raise RuntimeError(f"ingest wrote {result.chunks} chunks, the bare chunker made {len(texts)}")
    bare_rate = len(texts) / ((before + after) / 2)
    ingest_rate = result.chunks / result.seconds
    r.doc["results"].update({
        "bare_encode_s_after": round(after, 3), "bare_chunks_per_s": round(bare_rate, 2),
        "bare_large_batch_chunks_per_s": round(len(texts) / large, 2),
        "ingest_seconds": round(result.seconds, 3), "ingest_embed_seconds": round(result.embed_seconds, 3),
        "ingest_write_seconds": round(result.write_seconds, 3), "ingest_chunks_per_s": round(ingest_rate, 2),
    })
    r.row("embedding_chunks", f"MiniLM chunks/s: encode vs ingest (batch {batch})", "chunks/s", bare_rate, ingest_rate, "higher")
    r.row("embedding_only", "  of which embedding alone (ingest's encode time)", "chunks/s", bare_rate,
          result.chunks / max(result.embed_seconds, 1e-9), "higher")


# --------------------------------------------------------------------------- check: images


def _image_dataset(data: Path | None) -> str:
    from genloom.datasets.importers import import_digits, import_mnist

    if data is None:
        return import_digits("gpu-suite-digits").dataset
    return import_mnist(data / "mnist", "gpu-suite-mnist").dataset


def _bare_image_loop(arch: str, x, cfg: dict, device: str) -> tuple[list[float], int]:
    """The plain-PyTorch loop: the same network, optimiser, autocast and clipping as genloom's
    architecture, batches indexed from a tensor already on the device."""
    import torch

    from genloom.training.optim import adamw

    torch.manual_seed(0)
    bs = cfg["batch_size"]
    if arch == "vae":
        from genloom.architectures.vae import ConvVAE, VAEHyperparams

        hp = VAEHyperparams(**cfg["vae"])
        net = ConvVAE(tuple(x.shape[1:]), hp).to(device)
        ema = None

        def loss_of(xb):
            rec, kl = net(xb, None)
            return (rec + hp.beta * kl).mean()
    else:
        from genloom.architectures.diffusion import (
            EMA,
            Diffusion,
            DiffusionConfig,
            DiffusionHyperparams,
            _mults,
        )

        hp = DiffusionHyperparams(base_channels=cfg["diffusion"]["base_channels"],
                                  channel_mults=cfg["diffusion"]["channel_mults"])
        c, h, _ = x.shape[1:]
        net = Diffusion(DiffusionConfig(
            image_size=h, image_channels=c, schedule=hp.schedule, timesteps=hp.timesteps, base_channels=hp.base_channels,
            channel_mults=_mults(hp.channel_mults), num_res_blocks=hp.num_res_blocks, attention=hp.attention,
            dropout=hp.dropout, scale_shift=hp.scale_shift, conditioning="none", cond_drop_prob=hp.cond_drop_prob,
            ema_decay=hp.ema_decay)).to(device)
        ema = EMA(net, hp.ema_decay)

        def loss_of(xb):
            return net(xb * 2.0 - 1.0)
    opt = adamw(net.parameters(), lr=1e-3, weight_decay=hp.weight_decay, device=device)
    x = x.to(device)
    n = x.shape[0]
    windows: list[float] = []
    step = 0
    perm = torch.randperm(n, device=device)
    pos = 0
    sync(device)
    t_start = tick = time.perf_counter()
    while step < cfg["steps"]:
        if pos + bs > n:
            perm, pos = torch.randperm(n, device=device), 0
        xb = x[perm[pos : pos + bs]]
        pos += bs
        with autocast(device):
            loss = loss_of(xb)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(net)
        step += 1
        if step % cfg["log_every"] == 0:
            float(loss)  # a logging loop reads its loss here: the one sync per window, as genloom's trainer
            now = time.perf_counter()
            windows.append((now - tick) / cfg["log_every"])
            tick = now
            if now - t_start > cfg["budget_s"]:
                break
    return windows, step


def check_images(r: Report, cfg: dict, device: str, data: Path | None, smoke: bool) -> None:
    from genloom.datasets.loading import load_split
    from genloom.datasets.versions import describe_version, resolve_version
    from genloom.db.engine import session_scope
    from genloom.training.options import TrainOptions
    from genloom.jobs.train import train

    ref = _image_dataset(data)
    with session_scope() as s:
        info = describe_version(s, resolve_version(s, ref))
    x = load_split(info.version_id, "train").x
    r.doc["results"]["dataset"] = {"ref": info.ref, "train_images": int(x.shape[0]), "shape": list(x.shape[1:])}
    for arch in ("vae", "diffusion"):
        windows, bare_steps = _bare_image_loop(arch, x, cfg, device)
        opts = TrainOptions(dataset=ref, steps=cfg["steps"], batch_size=cfg["batch_size"], lr=1e-3, device=device,
                            name=f"gpu-suite-{arch}", log_every=cfg["log_every"], eval_every=cfg["eval_every"],
                            checkpoint_every=cfg["checkpoint_every"], time_budget=cfg["budget_s"],
                            hparams={k: str(v) for k, v in cfg[arch].items()})
        result = train(arch, opts, progress=False)
        gl_windows = logged_windows(result.run_id)
        bare_sps, gl_sps = 1.0 / steady(windows), 1.0 / steady(gl_windows)
        r.doc["results"][arch] = {
            "bare_steps": bare_steps, "bare_steps_per_s": round(bare_sps, 2), "bare_windows": len(windows),
            "genloom_steps": result.steps, "genloom_steps_per_s": round(gl_sps, 2), "genloom_windows": len(gl_windows),
            "genloom_wall_s": round(result.seconds, 2), "genloom_run_id": result.run_id,
        }
        r.row(f"images_{arch}", f"{arch.upper() if arch == 'vae' else arch} train steps/s (batch {cfg['batch_size']})",
              "steps/s", bare_sps, gl_sps, "higher")


# --------------------------------------------------------------------------- check: transformer training


def _text(data: Path | None) -> str:
    return builtin_text() if data is None else (data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")


def _text_dataset(text: str, name: str) -> str:
    """The store's NAME@N: first 90 % a train item, last 10 % a val item (nanoGPT's split; idempotent)."""
    import sqlalchemy as sa

    from genloom.datasets.items import put_items, text_item
    from genloom.datasets.versions import add_members, create_version, seal_version, version_ref
    from genloom.db.engine import session_scope
    from genloom.db.models import Dataset, DatasetVersion

    cut = int(len(text) * 0.9)
    with session_scope() as s:
        existing = s.scalars(
            sa.select(DatasetVersion).join(Dataset).where(Dataset.name == name, DatasetVersion.sealed)
            .order_by(DatasetVersion.version.desc()).limit(1)
        ).first()
        if existing is not None:
            return version_ref(s, existing)
        ids = put_items(s, [text_item(text[:cut]), text_item(text[cut:])])
        version = create_version(s, name, modality="text", description="first 90 % train, last 10 % val")
        add_members(s, version, [(ids[0], "train"), (ids[1], "val")])
        seal_version(s, version)
        return version_ref(s, version)


def _reference_training(text: str, cfg: dict, device: str) -> dict:
    """nanoGPT's train.py loop in plain PyTorch, with the data in a device tensor; evaluations use
    genloom's estimator (the same seeded val windows each time) so the two best losses compare."""
    import torch

    from genloom.architectures.gpt import GPT, GPTConfig

    t_start = time.perf_counter()  # the budget covers data preparation and compilation, as genloom's does
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(len(data) * 0.9)
    train_ids, val_ids = data[:n].to(device), data[n:].to(device)
    torch.manual_seed(1337)
    net = GPT(GPTConfig(block_size=cfg["block_size"], vocab_size=len(chars), n_layer=cfg["n_layer"],
                        n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=cfg["dropout"])).to(device)
    model = torch.compile(net) if cfg["compile"] else net
    opt = net.configure_optimizer(0.1, cfg["lr"], (0.9, 0.99), device)
    lr, iters, warmup, min_lr = cfg["lr"], cfg["iters"], cfg["warmup"], cfg["lr"] * 0.1
    block, bs = cfg["block_size"], cfg["batch_size"]

    def get_lr(it: int) -> float:
        if it < warmup:  # 1. linear warmup
            return lr * (it + 1) / (warmup + 1)
        ratio = min(1.0, (it - warmup) / max(1, iters - warmup))  # 2. cosine down to min_lr
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    def windows_of(ids, generator=None):
        where = generator.device if generator is not None else ids.device
        ix = torch.randint(len(ids) - block, (bs,), generator=generator, device=where).to(ids.device)
        chunk = ids[ix[:, None] + torch.arange(block + 1, device=ids.device)[None, :]]
        return chunk[:, :-1], chunk[:, 1:]

    @torch.no_grad()
    def estimate() -> float:
        net.eval()
        gen = torch.Generator().manual_seed(1234)
        losses = []
        for _ in range(cfg["eval_iters"]):
            x, y = windows_of(val_ids, gen)
            with autocast(device):
                _, loss = net(x, y)
            losses.append(float(loss))
        net.train()
        return sum(losses) / len(losses)

    windows: list[float] = []
    evals: list[tuple[int, float]] = []
    it = 0
    first_window_s = None
    tick = time.perf_counter()
    evaluated = False  # an evaluation ran inside the current window: left out of the step time
    while it < iters:
        for group in opt.param_groups:
            group["lr"] = get_lr(it)
        x, y = windows_of(train_ids)
        with autocast(device):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        it += 1
        stop = False
        if it % cfg["log_every"] == 0 or it == iters:
            float(loss)  # the log line's sync
            now = time.perf_counter()
            if first_window_s is None:
                first_window_s = now - tick
            elif not evaluated:
                windows.append((now - tick) / cfg["log_every"])
            tick, evaluated = now, False
            stop = now - t_start > cfg["budget_s"]
        if it % cfg["eval_interval"] == 0 and it < iters and not stop:
            evals.append((it, estimate()))
            evaluated = True
        if stop:
            break
    sync(device)
    loop_s = time.perf_counter() - t_start
    final = estimate()
    return {"iterations": it, "loop_s": round(loop_s, 2), "first_window_s": round(first_window_s or 0.0, 2),
            "ms_per_iter": round(1000 * statistics.median(windows), 3) if windows else None, "windows": len(windows),
            "val_history": [[s, round(v, 4)] for s, v in evals], "final_val_loss": round(final, 4),
            "best_val_loss": round(min([final] + [v for _, v in evals]), 4)}


def _genloom_training(ref: str, cfg: dict, device: str) -> dict:
    from genloom.training.options import TrainOptions
    from genloom.jobs.train import train

    opts = TrainOptions(
        dataset=ref, steps=cfg["iters"], batch_size=cfg["batch_size"], lr=cfg["lr"], seed=1337, name="gpu-suite-gpt",
        device=device, compile=cfg["compile"], eval_every=cfg["eval_interval"], log_every=cfg["log_every"],
        warmup=cfg["warmup"], min_lr_ratio=0.1, grad_clip=1.0, time_budget=cfg["budget_s"],
        hparams={"n_layer": cfg["n_layer"], "n_head": cfg["n_head"], "n_embd": cfg["n_embd"],
                 "block_size": cfg["block_size"], "dropout": cfg["dropout"], "eval_iters": cfg["eval_iters"]},
    )
    t0 = time.perf_counter()
    result = train("transformer", opts, progress=False)
    wall = time.perf_counter() - t0
    vals = logged_values(result.run_id, "val_loss")
    eval_steps = {s for s, _ in vals if s is not None}
    rates = logged_values(result.run_id, "steps_per_s")
    first_window_s = cfg["log_every"] / rates[0][1] if rates and rates[0][1] > 0 else None
    windows = logged_windows(result.run_id, skip_after=eval_steps, log_every=cfg["log_every"])[1:]
    return {"iterations": result.steps, "wall_s": round(wall, 2), "first_window_s": round(first_window_s or 0.0, 2),
            "ms_per_iter": round(1000 * statistics.median(windows), 3) if windows else None, "windows": len(windows),
            "val_history": [[s, round(v, 4)] for s, v in vals if s is not None],
            "final_val_loss": round(result.metrics.get("val_loss", float("nan")), 4),
            "best_val_loss": round(min(v for _, v in vals), 4), "run_id": result.run_id, "model": result.model}


def check_training(r: Report, cfg: dict, device: str, data: Path | None, smoke: bool) -> None:
    import torch

    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    text = _text(data)
    ref = _text_dataset(text, "gpu-suite-shakespeare" if data else "gpu-suite-text")
    r.doc["results"]["dataset"] = {"ref": ref, "characters": len(text)}
    # genloom first: whatever its compilation leaves in torch's caches can only help the baseline.
    r.doc["results"]["genloom"] = gl = _genloom_training(ref, cfg, device)
    r.save()
    r.doc["results"]["reference"] = bare = _reference_training(text, cfg, device)
    if bare["ms_per_iter"] is None or gl["ms_per_iter"] is None:
        raise RuntimeError("the budget ended before a window without compilation or evaluation was timed")
    r.row("train_ms_per_iter", "GPT train ms/iteration (no compile, no eval)", "ms", bare["ms_per_iter"], gl["ms_per_iter"], "lower")
    r.row("train_iterations", f"GPT iterations in {cfg['budget_s']:g} s (compile included)", "iters",
          bare["iterations"], gl["iterations"], "higher")
    r.row("train_best_val", f"GPT best val loss in {cfg['budget_s']:g} s", "nats/char",
          bare["best_val_loss"], gl["best_val_loss"], "lower")
    r.row("train_first_window", "GPT first log window (compile + warm-up)", "s",
          bare["first_window_s"], gl["first_window_s"], "lower")


# --------------------------------------------------------------------------- check: generation


def check_generation(r: Report, cfg: dict, device: str, data: Path | None, smoke: bool) -> None:
    import generation  # bench/generation.py

    def partial(report: dict) -> None:
        r.doc["results"] = report
        r.save()

    report = generation.measure(cfg["config"], new_tokens=cfg["new_tokens"], repeats=cfg["repeats"],
                                concurrency=cfg["concurrency"], collection=f"gpu-suite-{uuid.uuid4().hex[:8]}",
                                embedding_model=embedding_model_dir(smoke), on_partial=partial)
    partial(report)
    b1 = report["batch1"]
    r.row("gen_batch1", "generation, batch 1: plain static-cache generate vs logged ask", "new tokens/s",
          b1["plain_generate_tokens_per_s"], b1["genloom_end_to_end_tokens_per_s"], "higher")
    r.row("gen_overhead", "  RAG overhead share of a call (retrieval, prompt, log)", "share", None, b1["rag_overhead_share"], "lower")
    for c in report["concurrent"]:
        key = "gen_concurrent32" if c["requests"] == 32 else f"gen_concurrent{c['requests']}"
        r.row(key, f"generation, {c['requests']} concurrent vs one batch of {c['requests']}", "new tokens/s",
              c["plain_generate_batched_tokens_per_s"], c["genloom_tokens_per_s"], "higher")


# --------------------------------------------------------------------------- GPU package coverage (smoke runs)


def _listed() -> set[str]:
    """Distributions the GPU machine will have: its image's and the carried wheels (normalised names)."""
    names = set()
    for listing in ("gpu_image_packages.txt", "gpu_wheels.txt"):
        for line in (REPO / "bench" / listing).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                names.add(_norm(line.split("==")[0]))
    return names


def _norm(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def gpu_import_gaps() -> list[str]:
    """What would be an ImportError on the GPU machine: packages that this process imported from
    genloom's own code (modules of this repository now loaded) and that are neither in its image
    nor carried, and requirements of the carried wheels that are neither. (Third-party packages'
    own optional imports are theirs: an absent one is skipped there as here.)"""
    import ast
    import importlib.metadata as md

    from packaging.requirements import Requirement

    listed = _listed()
    owners = md.packages_distributions()
    ours: set[str] = set()
    for module in list(sys.modules.values()):
        path = Path(getattr(module, "__file__", None) or "/")
        # genloom's own files only: a virtual environment inside the checkout (.ci/run makes
        # .venv there) holds third-party packages, whose imports are theirs.
        if path.suffix == ".py" and path.is_relative_to(REPO) and "site-packages" not in path.parts:
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    ours.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    ours.add(node.module.split(".")[0])
    gaps = set()
    for name in ours & {m.split(".")[0] for m in list(sys.modules)}:
        dists = {_norm(d) for d in owners.get(name, [])}
        if dists and not dists & (listed | {"genloom"}):
            gaps.update(f"{d} (imported as {name})" for d in dists)
    for wheel in sorted(listed & {_norm(line.split("#")[0].strip()) for line in
                                  (REPO / "bench" / "gpu_wheels.txt").read_text().splitlines() if line.split("#")[0].strip()}):
        for text in md.distribution(wheel).requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": "", "python_version": "3.12"}):
                continue
            if _norm(req.name) not in listed:
                gaps.add(f"{_norm(req.name)} (required by the carried {wheel})")
    return sorted(gaps)


# --------------------------------------------------------------------------- set-up, marking, summary, pack


def setup(out: Path, smoke: bool, data: Path | None) -> None:
    """Database up and migrated; on the GPU machine, MiniLM unpacked from the pack."""
    import gzip
    import shutil

    from genloom.db.engine import get_engine

    if not smoke and not (data and (data / "manifest.json").is_file()):
        raise SystemExit(f"no pack at {data}: run `bash bench/gpu_pack.sh` on the CPU machine and carry .whl and .gpu")
    get_engine()  # starts the embedded server (or connects to DATABASE_URL) and migrates
    packed = data / "minilm" if data else None
    if packed and packed.is_dir() and not (MINILM_DIR / "config.json").is_file():
        tmp = MINILM_DIR.with_name(MINILM_DIR.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(packed, tmp, ignore=shutil.ignore_patterns("*.gz"))
        for gz in packed.glob("*.gz"):
            with gzip.open(gz, "rb") as src, (tmp / gz.stem).open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        tmp.rename(MINILM_DIR)
    print(json.dumps({"setup": "ok", "minilm": embedding_model_dir(smoke)}))


def mark(check: str, out: Path, rc: int, log: Path | None, mode: str) -> None:
    """A check's process failed or ran out of time: say so in its JSON, keeping what it measured."""
    path = out / f"{check}.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"check": check, "mode": mode, "rows": [], "results": {}}
    doc["status"] = "timeout" if rc in (124, 137) else "failed"
    doc["rc"] = rc
    tail = log.read_text(errors="replace").strip().splitlines()[-15:] if log and log.is_file() else []
    last = next((line.strip() for line in reversed(tail) if line.strip()), "")
    if doc["status"] == "timeout":
        doc["error"] = f"stopped by its time limit (exit {rc}); last output: {last[:300] or 'none'}"
    else:
        doc["error"] = doc.get("error") or last[:500] or f"exit status {rc}"
    doc["log_tail"] = tail
    path.write_text(json.dumps(doc, indent=2, default=str))


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def summary(out: Path, checks: tuple[str, ...] = CHECKS) -> str:
    """summary.md of this run's checks (their JSON files in `out`)."""
    docs = [json.loads((out / f"{c}.json").read_text()) for c in checks if (out / f"{c}.json").is_file()]
    env = next((d["env"] for d in docs if d.get("env")), {})
    smoke = any(d.get("mode") == "cpu-smoke" for d in docs)
    device_line = (
        f"Device: {env.get('device_name')} · torch {env.get('torch')} (CUDA {env.get('cuda')}) · transformers "
        f"{env.get('transformers')} · sentence-transformers {env.get('sentence_transformers')} · Python "
        f"{env.get('python')} · git {env.get('git_sha')}{' (dirty)' if env.get('git_dirty') else ''} "
        f"({env.get('source')}) · started {env.get('started_utc')}"
    )
    lines = [
        "# genloom GPU speed suite" + (" (CPU smoke run: tiny configs, figures mean nothing)" if smoke else ""),
        "",
        device_line,
        "",
        "| check | measure | unit | bare | genloom | genloom/bare | better | target | met |",
        "|---|---|---|---:|---:|---:|---|---|---|",
    ]
    for d in docs:
        for row in d.get("rows", []):
            lines.append(f"| {d['check']} | {row['measure']} | {row['unit']} | {_fmt(row['bare'])} | {_fmt(row['genloom'])} "
                         f"| {_fmt(row['ratio'])} | {row['better']} | {row['target'] or ''} | {_fmt(row['met'])} |")
    lines.append("")
    for c in checks:
        d = next((d for d in docs if d["check"] == c), None)
        status = d["status"] if d else "missing (never started: the suite's time ran out?)"
        extra = f": {d.get('error')}" if d and d.get("error") else ""
        wall = f" in {d.get('wall_s')} s" if d and d.get("wall_s") is not None else ""
        lines.append(f"- {c}: {status}{wall}{extra}")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def pack_data(dest: Path, shared: Path) -> None:
    """The data subsets the suite reads on the GPU machine (gpu_pack.sh calls this)."""
    import gzip
    import shutil

    import numpy as np

    from genloom.datasets.importers import read_idx

    (dest / "scifact").mkdir(parents=True, exist_ok=True)
    with (shared / "scifact" / "corpus.jsonl").open(encoding="utf-8") as src:
        lines = [next(src) for _ in range(PACK_LIMITS["scifact_docs"])]
    (dest / "scifact" / "corpus.jsonl").write_text("".join(lines), encoding="utf-8")
    (dest / "tinyshakespeare").mkdir(exist_ok=True)
    shutil.copyfile(shared / "tinyshakespeare" / "input.txt", dest / "tinyshakespeare" / "input.txt")
    (dest / "mnist").mkdir(exist_ok=True)
    for part, limit in (("train", PACK_LIMITS["mnist_train"]), ("t10k", PACK_LIMITS["mnist_test"])):
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{part}-{kind}-ubyte"
            array = read_idx(shared / "mnist" / f"{name}.gz")[:limit]
            header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            with gzip.open(dest / "mnist" / f"{name}.gz", "wb") as fh:
                fh.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    print(json.dumps({"pack_data": str(dest), **PACK_LIMITS}))


def pack_minilm(dest: Path, data: Path) -> None:
    """all-MiniLM-L6-v2 for the GPU machine, small enough to carry: fp16, gzipped, and the rows of
    the word-embedding table for tokens the suite never embeds set to zero (they compress to
    nothing). Every text the suite embeds gets exactly the fp16 model's vectors; speed does not
    depend on the table's contents. Checked here before it is written."""
    import gzip
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    from genloom.embeddings import model_path
    from ingest.chunking import Chunker, embedding_text

    source = model_path(None)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("model.safetensors", "*.md", ".gitattributes", "data_config.json"))
    from sentence_transformers import SentenceTransformer

    full = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    chunker = Chunker(full.tokenizer, full.max_seq_length)
    docs = scifact_docs(data) + builtin_docs()
    import generation

    texts = [embedding_text(d.title, c.text) for d in docs for c in chunker.chunk(d.text, d.title)]
    texts += [generation.QUESTION, "".join(chr(i) for i in range(32, 127))]
    keep = sorted({i for ids in full.tokenizer(texts)["input_ids"] for i in ids} | set(full.tokenizer.all_special_ids))
    weights = load_file(str(source / "model.safetensors"))
    table = next(k for k in weights if k.endswith("word_embeddings.weight"))
    out = {k: v.astype(np.float16) for k, v in weights.items()}
    mask = np.zeros(out[table].shape[0], dtype=bool)
    mask[keep] = True
    out[table][~mask] = 0
    save_file(out, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    # the check: the packed model embeds sample texts as the fp16 original does
    probe = texts[:: max(1, len(texts) // 64)][:64]
    pruned = SentenceTransformer(str(tmp), device="cpu", local_files_only=True)
    full.half()
    a = full.encode(probe, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    b = pruned.half().encode(probe, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    if not np.allclose(a, b, atol=1e-3):
        raise SystemExit(f"packed MiniLM differs from the original on suite texts (max |Δ| {np.abs(a - b).max():.2e})")
    with (tmp / "model.safetensors").open("rb") as src, gzip.open(tmp / "model.safetensors.gz", "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    (tmp / "model.safetensors").unlink()
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    print(json.dumps({"pack_minilm": str(dest), "kept_token_rows": len(keep), "vocab": int(mask.size),
                      "checked_texts": len(probe)}))


# --------------------------------------------------------------------------- entry point


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=(*CHECKS, "setup", "mark", "summary", "pack-data", "pack-minilm"))
    p.add_argument("check", nargs="?", help="with mark: the check to mark")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench/results/gpu")))
    p.add_argument("--smoke", action="store_true", help="tiny configs on the CPU")
    p.add_argument("--data", type=Path, help="the pack's data folder (default: .gpu/ on a GPU run, built-ins for --smoke)")
    p.add_argument("--checks", default=",".join(CHECKS), help="with summary: the checks of this run")
    p.add_argument("--rc", type=int, default=1)
    p.add_argument("--log", type=Path)
    p.add_argument("--dest", type=Path, default=REPO / ".gpu")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    a = p.parse_args()
    mode = "cpu-smoke" if a.smoke else "gpu"
    data = a.data if a.data else (None if a.smoke else REPO / ".gpu")
    a.out.mkdir(parents=True, exist_ok=True)
    if a.command == "summary":
        print(summary(a.out, tuple(c for c in a.checks.split(",") if c)))
        return
    if a.command == "mark":
        mark(a.check, a.out, a.rc, a.log, mode)
        return
    if a.command == "pack-data":
        pack_data(a.dest, a.shared)
        return
    if a.command == "pack-minilm":
        pack_minilm(a.dest / "minilm", a.dest)
        return
    if a.command == "setup":
        setup(a.out, a.smoke, data)
        return

    import torch

    if a.smoke:
        device = "cpu"
    elif torch.cuda.is_available():
        device = "cuda"
    else:
        raise SystemExit("no CUDA device here: the suite is for a GPU machine (use --cpu-smoke to rehearse it)")
    report = Report(a.command, a.out, mode, device, data)
    check = {"embedding": check_embedding, "images": check_images, "training": check_training,
             "generation": check_generation}[a.command]
    try:
        check(report, CONFIG[mode][a.command], device, data, a.smoke)
    except BaseException as exc:
        report.doc["status"] = "failed"
        report.doc["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        report.doc["traceback"] = traceback.format_exc().splitlines()[-12:]
        report.save()
        raise
    if a.smoke:
        report.doc["gpu_import_gaps"] = gpu_import_gaps()
    report.finish()
    print(json.dumps({a.command: report.doc["status"], "wall_s": report.doc["wall_s"]}))


if __name__ == "__main__":
    main()
