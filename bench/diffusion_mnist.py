"""Diffusion on MNIST with a recorded budget: sample grids (unconditional, class-guided, prompted) and sampler timing.

    python bench/diffusion_mnist.py --steps 600 --out bench/results/diffusion_mnist
    python bench/diffusion_mnist.py --steps 20000 --batch-size 128 --device cuda   # a GPU budget

Imports ../shared/data/mnist into the store (dataset `mnist`, once), then trains two models
through genloom's job framework: a class-conditional one (with condition dropout, so the same
network also samples unconditionally through its null class) and a text-conditioned one
(MiniLM embeddings of label captions). Writes three PNG grids and times DDIM-50 against
DDPM-1000 on the same model, batch and seed. Prints one JSON object. FID and conditional
accuracy come with the evaluation issue's classifier.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
sys.path.insert(0, str(REPO))
MNIST = REPO.parent / "shared" / "data" / "mnist"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--base-channels", type=int, default=32)
    p.add_argument("--n", type=int, default=16, help="samples per grid and per timing")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 avoids oversubscription on a shared CPU)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "diffusion_mnist")
    p.add_argument("--skip-text", action="store_true", help="train only the class-conditional model")
    a = p.parse_args()

    import torch

    from genloom.datasets.importers import import_mnist
    from genloom.db.engine import session_scope
    from genloom.devices import resolve_device
    from genloom.training.images import save_grid
    from genloom.jobs.models import load_model
    from genloom.training.options import SampleOptions, TrainOptions
    from genloom.jobs.train import train

    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    a.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"bench": "diffusion-mnist", "machine": {"device": device, "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
                    "load_avg_start": os.getloadavg()[0]}}
    t0 = time.perf_counter()
    imported = import_mnist(MNIST, "mnist")
    report["dataset"] = {"ref": imported.dataset, "import_s": round(time.perf_counter() - t0, 1), "unchanged": imported.unchanged}
    hparams = {"base_channels": str(a.base_channels), "channel_mults": "1,2,2", "ema_decay": "0.999"}

    def fit(name: str, **flags) -> dict:
        started = time.perf_counter()
        result = train("diffusion", TrainOptions(dataset="mnist", steps=a.steps, batch_size=a.batch_size, lr=a.lr,
                                                 name=name, device=device, eval_every=max(1, a.steps // 4),
                                                 hparams=dict(hparams), **flags), progress=False)
        return {"model": result.model, "run_id": result.run_id, "steps": result.steps,
                "wall_s": round(time.perf_counter() - started, 1), "val_loss": round(result.metrics["val_loss"], 4)}

    report["class_model"] = fit("bench-mnist-class", conditional=True)
    with session_scope() as s:
        _, _, runner = load_model(s, report["class_model"]["model"], device)
    net = runner.model
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731

    # unconditional: the null class (the network learnt ε(x) from the 10 % dropped labels)
    uncond = net.sample(a.n, sampler="ddim", steps=50, generator=gen())
    save_grid((uncond + 1) / 2, a.out / "unconditional.png")
    labels = torch.arange(a.n) % 10
    guided = net.sample(a.n, sampler="ddim", steps=50, guidance=a.guidance, class_labels=labels, generator=gen())
    save_grid((guided + 1) / 2, a.out / "class_guided.png", nrow=10)

    timing = {}
    for sampler, steps in (("ddim", 50), ("ddpm", 1000)):
        started = time.perf_counter()
        net.sample(a.n, sampler=sampler, steps=steps, guidance=a.guidance, class_labels=labels, generator=gen())
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        timing[f"{sampler}_{steps}_s"] = round(time.perf_counter() - started, 2)
    timing["speedup_ddim50_over_ddpm1000"] = round(timing["ddpm_1000_s"] / timing["ddim_50_s"], 1)
    timing["batch"] = a.n
    timing["guidance"] = a.guidance
    report["sampling_time"] = timing

    if not a.skip_text:
        report["text_model"] = fit("bench-mnist-text", text_conditional=True)
        with session_scope() as s:
            _, _, text_runner = load_model(s, report["text_model"]["model"], device)
        prompts = ["a handwritten zero", "the number 1", "a drawing of a two", "digit three", "a handwritten four",
                   "the number five", "six, written by hand", "a handwritten seven", "the digit eight", "number nine"]
        rows = [text_runner.sample(SampleOptions(n=8, seed=0, prompt=pr, steps=50, guidance=a.guidance)).images
                for pr in prompts]
        save_grid(torch.cat(rows), a.out / "prompted.png", nrow=8)
        report["prompts"] = prompts
    report["grids"] = sorted(str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p) for p in a.out.glob("*.png"))
    report["machine"]["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
