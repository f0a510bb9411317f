"""The hybrids on MNIST against their baselines, each model at the same CPU wall-time budget.

    OMP_NUM_THREADS=1 nice -n 19 python bench/hybrids_mnist.py --budget 240 --part all

Imports ../shared/data/mnist as dataset `mnist` (once), trains every model through genloom's
job framework with `--set time_budget=BUDGET` (same seconds for a hybrid and its baseline),
and writes one result file per comparison under bench/results/hybrids/:

- vae_gan.json: VAE vs VAE-GAN. FID of --fid-n samples against the test split in the
  features of genloom's own MNIST classifier (`genloom eval model`), and the validation
  reconstruction error (Bernoulli NLL, nats/image). Targets: FID ≥ 30 % lower, recon within 20 %.
- latent_diffusion.json: text-conditioned pixel diffusion vs latent diffusion over the VAE-GAN
  (4×4 latents). Sampling seconds per image at DDIM-50, FID as above, and the class accuracy of
  100 samples of "a handwritten seven" by the same classifier. Targets: ≥ 3× faster, FID within
  10 %, accuracy ≥ 90 %.
- clip.json: `genloom eval clip` on the test split (ten captions "a handwritten zero" … "nine").
  Target: text→image top-1 ≥ 0.9.
- clip_guidance.json: an unconditional pixel diffusion model sampled with and without
  `--guide clip:…` for the ten captions (--guide-n samples each, same seeds); prompt accuracy by the
  classifier, for every guide scale in --scales (all reported). Target: +20 points.

On this shared 2-core machine each run is bounded by --budget and uses one thread; the
figures are for that budget, not for converged models. Uses GENLOOM_HOME (default a
directory of its own) unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
MNIST = REPO.parent / "shared" / "data" / "mnist"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

UNET = {"base_channels": "32", "channel_mults": "1,2", "attention": "false", "ema_decay": "0.995"}
AE = {"channels": "32", "latent_dim": "16"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=240, help="training seconds per model (time_budget)")
    p.add_argument("--part", choices=("all", "vae-gan", "latent", "clip", "guidance"), default="all")
    p.add_argument("--fid-n", type=int, default=1000)
    p.add_argument("--scales", default="30,100,300", help="CLIP guide scales to report")
    p.add_argument("--guide-n", type=int, default=20, help="samples per caption in the guidance comparison")
    p.add_argument("--guide-steps", type=int, default=25, help="DDIM steps in the guidance comparison")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=50, help="steps between logs; the time budget is checked there")
    p.add_argument("--batch-size", type=int, help="training batch size of every model (default: each one's own)")
    p.add_argument("--timing-n", type=int, default=64, help="latent part: images in the timed sampling batch")
    p.add_argument("--seven-n", type=int, default=100, help='latent part: samples of "a handwritten seven" judged')
    p.add_argument("--mnist", type=Path, default=MNIST, help="folder of the four MNIST IDX files")
    p.add_argument("--limit", type=int, help="only the first N train and N test images (dataset mnist-N)")
    p.add_argument("--reuse", action="store_true", help="use the latest registered model of each name if there is one")
    a = p.parse_args()
    os.environ.setdefault("GENLOOM_HOME", str(Path("/tmp") / f"genloom-bench-hybrids-{os.getuid()}"))

    import torch

    from genloom.datasets.importers import import_mnist

    torch.set_num_threads(a.threads)
    a.dataset = f"mnist-{a.limit}" if a.limit else "mnist"
    import_mnist(a.mnist, a.dataset, limit=a.limit)
    bench = Bench(a)
    parts = ("vae-gan", "clip", "latent", "guidance") if a.part == "all" else (a.part,)
    for part in parts:
        run = {"vae-gan": bench.vae_gan, "latent": bench.latent, "clip": bench.clip, "guidance": bench.guidance}[part]
        try:
            run()
        except Exception as exc:  # one failed comparison must not lose the others: record it and go on
            import traceback

            traceback.print_exc()
            bench.write(f"{part.replace('-', '_')}_error", {"part": part, "error": f"{type(exc).__name__}: {exc}"})


class Bench:
    def __init__(self, a):
        self.a = a
        self.models: dict[str, dict] = {}

    # ------------------------------------------------------------------ helpers

    def fit(self, arch: str, name: str, hparams: dict, **flags) -> dict:
        """Train for the budget (or reuse this budget's model from an earlier part of the same run)."""
        from genloom.jobs.train import train
        from genloom.training.options import TrainOptions

        if name in self.models:
            return self.models[name]
        if self.a.reuse and (reused := self.registered(name)) is not None:
            self.models[name] = reused
            return reused
        started = time.perf_counter()
        result = train(
            arch,
            TrainOptions(
                dataset=self.a.dataset,
                steps=1_000_000,  # the time budget ends every run
                name=name,
                device="cpu",
                eval_every=10**9,  # no evaluations inside the budget; the final one runs after it
                checkpoint_every=10**9,
                # A short warmup, then a constant LR: the budget, not a step count, ends the run.
                hparams={
                    **hparams,
                    "time_budget": str(self.a.budget),
                    "log_every": str(self.a.log_every),
                    "warmup": "100",
                    "lr_schedule": "constant",
                },
                **({"batch_size": self.a.batch_size} if self.a.batch_size else {}),
                **flags,
            ),
        )
        self.models[name] = {
            "model": result.model,
            "steps": result.steps,
            "train_s": round(result.seconds, 1),
            "wall_s": round(time.perf_counter() - started, 1),
            "metrics": {k: round(v, 4) for k, v in result.metrics.items() if not k.startswith(("lr", "steps_per"))},
        }
        return self.models[name]

    def registered(self, name: str) -> dict | None:
        """The latest registered NAME with its training run's steps and seconds (for --reuse)."""
        from genloom.db.engine import session_scope
        from genloom.errors import NotFound
        from genloom.jobs.models import show_model

        with session_scope() as s:
            try:
                shown = show_model(s, name)
            except NotFound:
                return None
        return {
            "model": shown["model"],
            "reused": True,
            "steps": shown["metadata"].get("steps"),
            "metrics": {k: round(v, 4) for k, v in shown["metrics"].items()},
        }

    def fid(self, model: str) -> dict:
        from genloom.evaluation.jobs import EvalModelOptions, eval_model_job

        r = eval_model_job(model, self.a.dataset, EvalModelOptions(split="test", n=self.a.fid_n, device="cpu"))
        return {
            k: round(v, 4)
            for k, v in r["metrics"].items()
            if k in ("fid", "fid_floor", "kid_mean", "precision", "recall", "conditional_accuracy")
        }

    def classifier(self):
        from genloom.datasets.versions import describe_version, resolve_version
        from genloom.db.engine import session_scope
        from genloom.evaluation.jobs import EvalModelOptions, _feature_network

        with session_scope() as s:
            info = describe_version(s, resolve_version(s, self.a.dataset))
        return _feature_network(info, EvalModelOptions(device="cpu"), "cpu")

    def runner(self, ref: str):
        from genloom.db.engine import session_scope
        from genloom.jobs.models import load_model

        with session_scope() as s:
            return load_model(s, ref, "cpu")[2]

    def sample(self, ref: str, **kw):
        from genloom.db.engine import session_scope
        from genloom.jobs.models import load_model
        from genloom.jobs.sample import _load_guide
        from genloom.training.options import SampleOptions

        with session_scope() as s:
            row, arch_cls, runner = load_model(s, ref, "cpu")
            opts = SampleOptions(device="cpu", **kw)
            arch_cls.check_sample_options(opts, dict(row.config))
            if opts.guide:
                _load_guide(s, opts, dict(row.config), "cpu")
        return runner.sample(opts)

    def write(self, name: str, data: dict) -> None:
        import json

        from benchlib import write_result

        data = {
            "command": " ".join(sys.argv),
            "dataset": self.a.dataset,
            "budget_s_per_model": self.a.budget,
            "torch_threads": self.a.threads,
            "log_every": self.a.log_every,
            "batch_size": self.a.batch_size,
            **data,
        }
        path = write_result(f"hybrids/{name}.json", data)
        print(json.dumps({name: data}, indent=2, default=str))
        print(f"wrote {path}", file=sys.stderr)

    # ------------------------------------------------------------------ the comparisons

    def vae_gan(self) -> None:
        vae = self.fit("vae", "bench-hyb-vae", AE)
        vae_gan = self.fit("vae-gan", "bench-hyb-vaegan", {**AE, "d_channels": "32"})
        vae_fid, gan_fid = self.fid(vae["model"]), self.fid(vae_gan["model"])
        fid_drop = 1 - gan_fid["fid"] / vae_fid["fid"]
        recon_ratio = vae_gan["metrics"]["val_recon"] / vae["metrics"]["val_recon"]
        self.write(
            "vae_gan",
            {
                "vae": {**vae, "eval": vae_fid},
                "vae_gan": {**vae_gan, "eval": gan_fid},
                "fid_reduction": round(fid_drop, 4),
                "recon_ratio": round(recon_ratio, 4),
                "targets": {"fid_reduction_min": 0.30, "recon_ratio_max": 1.20},
                "reached": {"fid": fid_drop >= 0.30, "recon": recon_ratio <= 1.20},
            },
        )

    def latent(self) -> None:
        import torch

        part_started = time.perf_counter()
        vae_gan = self.fit("vae-gan", "bench-hyb-vaegan", {**AE, "d_channels": "32"})
        pixel = self.fit("diffusion", "bench-hyb-pixel", UNET, text_conditional=True)
        latent = self.fit(
            "latent-diffusion", "bench-hyb-latent", UNET, text_conditional=True, autoencoder=vae_gan["model"]
        )
        timing = {}
        for key, model in (("pixel", pixel), ("latent", latent)):
            self.sample(model["model"], n=4, steps=5, prompt="a handwritten seven")  # warm-up
            started = time.perf_counter()
            self.sample(model["model"], n=self.a.timing_n, steps=50, prompt="a handwritten seven", guidance=2.0)
            timing[f"{key}_s_per_image"] = round((time.perf_counter() - started) / self.a.timing_n, 4)
        speedup = timing["pixel_s_per_image"] / timing["latent_s_per_image"]
        fnet = self.classifier()
        seven = fnet.label_names.index("7")
        accuracy = {}
        for key, model in (("pixel", pixel), ("latent", latent)):
            images = self.sample(
                model["model"], n=self.a.seven_n, steps=50, prompt="a handwritten seven", guidance=2.0
            ).images
            accuracy[key] = round(float((torch.as_tensor(fnet.apply(images)[1]) == seven).float().mean()), 4)
        pixel_fid, latent_fid = self.fid(pixel["model"]), self.fid(latent["model"])
        fid_ratio = latent_fid["fid"] / pixel_fid["fid"]
        self.write(
            "latent_diffusion",
            {
                "autoencoder": vae_gan,
                "pixel": {**pixel, "eval": pixel_fid},
                "latent": {**latent, "eval": latent_fid},
                "sampling": {
                    **timing,
                    "steps": 50,
                    "sampler": "ddim",
                    "batch": self.a.timing_n,
                    "guidance": 2.0,
                    "speedup": round(speedup, 2),
                },
                "seven_accuracy": {
                    **accuracy,
                    "prompt": "a handwritten seven",
                    "n": self.a.seven_n,
                    "classifier": fnet.ref,
                },
                "fid_n": self.a.fid_n,
                "fid_ratio_latent_over_pixel": round(fid_ratio, 4),
                "part_wall_s": round(time.perf_counter() - part_started, 1),
                "targets": {"speedup_min": 3.0, "fid_ratio_max": 1.10, "seven_accuracy_min": 0.90},
                "reached": {
                    "speedup": speedup >= 3.0,
                    "fid": fid_ratio <= 1.10,
                    "seven_accuracy": accuracy["latent"] >= 0.9,
                },
            },
        )

    def clip(self) -> None:
        from genloom.evaluation.jobs import eval_clip_job

        clip = self.fit("clip", "bench-hyb-clip", {})
        result = eval_clip_job(clip["model"], self.a.dataset, split="test", device="cpu")
        t2i = result["metrics"]["text_to_image_top1"]
        self.write(
            "clip",
            {
                "clip": clip,
                "eval": result["metrics"],
                "captions": [f"a handwritten {w}" for w in DIGITS],
                "targets": {"text_to_image_top1_min": 0.9},
                "reached": {"text_to_image_top1": t2i >= 0.9},
            },
        )

    def guidance(self) -> None:
        import torch

        clip = self.fit("clip", "bench-hyb-clip", {})
        uncond = self.fit("diffusion", "bench-hyb-uncond", UNET)
        fnet = self.classifier()
        scales = [0.0] + [float(s) for s in self.a.scales.split(",")]
        per_scale: dict[str, dict] = {}
        for scale in scales:
            hits = total = 0
            started = time.perf_counter()
            for digit, word in enumerate(DIGITS):
                # unguided: no prompt at all (an unconditional model refuses one without --guide)
                kw = {"guide": f"clip:{clip['model']}", "guide_scale": scale, "prompt": f"a handwritten {word}"}
                kw = kw if scale else {}
                images = self.sample(
                    uncond["model"],
                    n=self.a.guide_n,
                    seed=digit,
                    steps=self.a.guide_steps,
                    **kw,
                )
                pred = torch.as_tensor(fnet.apply(images.images)[1])
                hits += int((pred == fnet.label_names.index(str(digit))).sum())
                total += len(pred)
            per_scale[str(scale)] = {
                "prompt_accuracy": round(hits / total, 4),
                "sampling_s": round(time.perf_counter() - started, 1),
            }
        unguided = per_scale["0.0"]["prompt_accuracy"]
        best = max((s for s in per_scale if s != "0.0"), key=lambda s: per_scale[s]["prompt_accuracy"])
        gain = per_scale[best]["prompt_accuracy"] - unguided
        self.write(
            "clip_guidance",
            {
                "clip": clip,
                "unconditional_diffusion": uncond,
                "classifier": fnet.ref,
                "samples_per_prompt": 50,
                "steps": 50,
                "by_scale": per_scale,
                "best_scale": float(best),
                "gain_points": round(100 * gain, 1),
                "note": "every scale tried is listed; best_scale is the best of them on these same prompts",
                "targets": {"gain_points_min": 20},
                "reached": {"gain": gain >= 0.20},
            },
        )


if __name__ == "__main__":
    main()
