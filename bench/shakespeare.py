"""Tiny Shakespeare, character level: genloom's transformer vs a plain-PyTorch loop of the same model.

    python bench/shakespeare.py              # nanoGPT's CPU recipe: 4 layers, 128 wide, context 64, 2,000 iters
    python bench/shakespeare.py --gpu        # nanoGPT's GPU recipe: 6 layers, 384 wide, context 256, 5,000 iters, dropout 0.2

Data: ../shared/data/tinyshakespeare/input.txt; first 90 % of the characters train, last 10 %
validate (nanoGPT's prepare.py). genloom reads it from the store (a dataset `tinyshakespeare`
with one train item and one val item, created here through the datasets API if absent) and
trains with `genloom.jobs.train.train` (runs, metrics, checkpoints, registry: the whole
job). The reference is nanoGPT's train.py loop in plain PyTorch on the same GPT class, the
same optimiser, LR schedule, clipping, batch size, evaluation cadence and seed, with the data
in an in-memory tensor. Both final models are scored by the SAME estimator: the mean loss
over `--final-eval-iters` seeded random val windows. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform as py_platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
sys.path.insert(0, str(REPO))

# GENLOOM_SHAKESPEARE points elsewhere (a GPU machine without ../shared, say).
DATA = Path(os.environ.get("GENLOOM_SHAKESPEARE", REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"))
DATASET = "tinyshakespeare"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", action="store_true", help="nanoGPT's GPU recipe (6×384, context 256, batch 64, 5,000 iters, dropout 0.2)")
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-head", type=int)
    p.add_argument("--n-embd", type=int)
    p.add_argument("--block-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--iters", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--dropout", type=float)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-interval", type=int)
    p.add_argument("--eval-iters", type=int)
    p.add_argument("--final-eval-iters", type=int, default=200)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--only", choices=("genloom", "reference"))
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, help="torch CPU threads (1 avoids oversubscription on a shared CPU)")
    a = p.parse_args()
    cpu = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, iters=2000, lr=1e-3, dropout=0.0,
               eval_interval=250, eval_iters=20)
    gpu = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, iters=5000, lr=1e-3, dropout=0.2,
               eval_interval=250, eval_iters=200)
    for key, value in (gpu if a.gpu else cpu).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    return a


def ensure_dataset() -> str:
    """The store's tinyshakespeare@N: first 90 % train item, last 10 % val item (idempotent)."""
    import sqlalchemy as sa

    from genloom.datasets.items import put_items, text_item
    from genloom.datasets.versions import add_members, create_version, seal_version, version_ref
    from genloom.db.engine import session_scope
    from genloom.db.models import Dataset, DatasetVersion

    text = DATA.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    with session_scope() as s:
        existing = s.scalars(
            sa.select(DatasetVersion).join(Dataset).where(Dataset.name == DATASET, DatasetVersion.sealed)
            .order_by(DatasetVersion.version.desc()).limit(1)
        ).first()
        if existing is not None:
            return version_ref(s, existing)
        ids = put_items(s, [text_item(text[:cut], metadata={"source": "tinyshakespeare", "part": "first 90%"}),
                            text_item(text[cut:], metadata={"source": "tinyshakespeare", "part": "last 10%"})])
        version = create_version(s, DATASET, modality="text", description="Tiny Shakespeare, 90/10 by characters")
        add_members(s, version, [(ids[0], "train"), (ids[1], "val")])
        seal_version(s, version)
        return version_ref(s, version)


def estimate_loss(net, ids, a, device) -> float:
    """Mean loss over seeded random windows of the val text: the same estimator for both models."""
    import torch

    gen = torch.Generator().manual_seed(4321)
    net.eval()
    losses = []
    with torch.no_grad():
        for _ in range(a.final_eval_iters):
            ix = torch.randint(len(ids) - a.block_size, (a.batch_size,), generator=gen)
            x = torch.stack([ids[i : i + a.block_size] for i in ix]).to(device)
            y = torch.stack([ids[i + 1 : i + 1 + a.block_size] for i in ix]).to(device)
            with autocast(device):
                _, loss = net(x, y)
            losses.append(float(loss))
    return sum(losses) / len(losses)


def autocast(device: str):
    import contextlib

    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else contextlib.nullcontext()


def run_genloom(a, device: str) -> dict:
    import torch

    from genloom.architectures import text_tokenizer
    from genloom.architectures.hf_export import gpt_from_hf_dir, unpack_hf
    from genloom.db.engine import session_scope
    from genloom.jobs.train import train
    from genloom.registry import load_checkpoint, resolve_model
    from genloom.training.options import TrainOptions

    ref = ensure_dataset()
    opts = TrainOptions(
        dataset=ref, steps=a.iters, batch_size=a.batch_size, lr=a.lr, seed=a.seed, name="bench-shakespeare",
        device=device, compile=a.compile, eval_every=a.eval_interval, checkpoint_every=a.iters // 4,
        warmup=a.warmup, min_lr_ratio=0.1, grad_clip=1.0,
        hparams={"n_layer": a.n_layer, "n_head": a.n_head, "n_embd": a.n_embd, "block_size": a.block_size,
                 "dropout": a.dropout, "eval_iters": a.eval_iters},
    )
    t0 = time.perf_counter()
    result = train("transformer", opts, progress=False)
    wall = time.perf_counter() - t0
    with session_scope() as s:
        row = resolve_model(s, result.model)
        blob = load_checkpoint(s, row)
    net, tok = gpt_from_hf_dir(unpack_hf(blob))
    net.to(device)
    val_ids = torch.tensor(text_tokenizer.encode(tok, DATA.read_text(encoding="utf-8")[int(len(DATA.read_text(encoding="utf-8")) * 0.9):]))
    return {"val_loss": round(estimate_loss(net, val_ids, a, device), 4), "wall_s": round(wall, 1),
            "framework_val_loss": round(result.metrics.get("val_loss", float("nan")), 4),
            "val_bpc_reported": round(result.metrics.get("val_bpc", float("nan")), 4),
            "model": result.model, "run_id": result.run_id, "vocab_size": net.config.vocab_size}


def run_reference(a, device: str) -> dict:
    """nanoGPT's train.py, reduced to its loop, in plain PyTorch."""
    import torch

    from genloom.architectures.gpt import GPT, GPTConfig

    text = DATA.read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(len(data) * 0.9)
    train_data, val_data = data[:n].to(device), data[n:]
    torch.manual_seed(a.seed)
    net = GPT(GPTConfig(block_size=a.block_size, vocab_size=len(chars), n_layer=a.n_layer, n_head=a.n_head,
                        n_embd=a.n_embd, dropout=a.dropout)).to(device)
    model = torch.compile(net) if a.compile else net
    opt = net.configure_optimizer(0.1, a.lr, (0.9, 0.99), device)
    min_lr = a.lr / 10

    def get_lr(it: int) -> float:
        if it < a.warmup:  # 1. linear warmup
            return a.lr * (it + 1) / (a.warmup + 1)
        if it > a.iters:  # 2. past the decay: the floor
            return min_lr
        ratio = (it - a.warmup) / (a.iters - a.warmup)  # 3. cosine down to min_lr
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (a.lr - min_lr)

    def get_batch(split_data):
        ix = torch.randint(len(split_data) - a.block_size, (a.batch_size,)).to(split_data.device)
        offsets = torch.arange(a.block_size + 1, device=split_data.device)
        chunk = split_data[ix[:, None] + offsets[None, :]]
        return chunk[:, :-1], chunk[:, 1:]

    val_dev = val_data.to(device)
    t0 = time.perf_counter()
    for it in range(a.iters):
        if it % a.eval_interval == 0 and it > 0:  # same evaluation cadence as the framework
            net.eval()
            with torch.no_grad():
                for _ in range(a.eval_iters):
                    x, y = get_batch(val_dev)
                    with autocast(device):
                        net(x, y)
            net.train()
        for group in opt.param_groups:
            group["lr"] = get_lr(it)
        x, y = get_batch(train_data)
        with autocast(device):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"val_loss": round(estimate_loss(net, val_data, a, device), 4), "wall_s": round(wall, 1), "vocab_size": len(chars)}


def main() -> None:
    import torch

    from genloom.devices import resolve_device

    a = parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = {
        "bench": "shakespeare-char", "recipe": "gpu" if a.gpu else "cpu",
        "config": {k: getattr(a, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "iters", "lr",
                                              "dropout", "warmup", "eval_interval", "eval_iters", "final_eval_iters", "compile")},
        "machine": {"device": device, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": py_platform.python_version(),
                    "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
                    "load_avg_start": os.getloadavg()[0]},
        "nanogpt_reported_val_loss": 1.88 if not a.gpu else 1.4697,
    }
    if a.only in (None, "reference"):
        out["reference"] = run_reference(a, device)
    if a.only in (None, "genloom"):
        out["genloom"] = run_genloom(a, device)
    if "reference" in out and "genloom" in out:
        out["wall_ratio_genloom_over_reference"] = round(out["genloom"]["wall_s"] / out["reference"]["wall_s"], 3)
        out["val_loss_diff"] = round(out["genloom"]["val_loss"] - out["reference"]["val_loss"], 4)
    out["machine"]["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
