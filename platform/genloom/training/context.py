"""What the training framework hands an architecture (`TrainContext`), and the distributed set-up.

Under `torchrun --nproc_per_node N` every process trains; rank 0 alone writes to the
database, gradients are averaged across ranks, and small objects (run id, metrics, a stop
decision) are broadcast from rank 0.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any


class TrainContext:
    """What the framework hands an architecture: device, precision, distributed helpers."""

    def __init__(
        self,
        *,
        device: str,
        rank: int,
        world_size: int,
        batch_size: int,
        lr: float,
        total_steps: int,
        grad_clip: float,
        seed: int,
        compile: bool,
    ):
        import torch

        self.torch = torch
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size  # per process
        self.lr = lr
        self.total_steps = total_steps
        self.grad_clip = grad_clip
        self.seed = seed
        self.compile = compile
        self._ddp_params: set[int] = set()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        """bf16 autocast on CUDA (no loss scaling needed); a no-op elsewhere."""
        if self.device.startswith("cuda"):
            return self.torch.autocast("cuda", dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def ddp(self, module):
        """Wrap in DistributedDataParallel when running under torchrun (else return as is)."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        self._ddp_params.update(id(p) for p in module.parameters())
        ids = [int(self.device.split(":")[1])] if self.device.startswith("cuda:") else None
        return DistributedDataParallel(module, device_ids=ids)

    def maybe_compile(self, module):
        return self.torch.compile(module) if self.compile else module

    def backward_step(self, loss, optimizer, *, clip: float | None = None, retain_graph: bool = False):
        """backward, average gradients across ranks (unless DDP did), clip, step, zero.

        Returns the grad norm as a 0-dim tensor: turning it into a Python float here would make
        the CPU wait for the GPU every step; the trainer reads metrics only when it logs them."""
        torch = self.torch
        loss.backward(retain_graph=retain_graph)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.distributed:
            import torch.distributed as dist

            for p in params:
                if id(p) not in self._ddp_params:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                    p.grad.div_(self.world_size)
        limit = self.grad_clip if clip is None else clip
        if limit and limit > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, limit)
        elif params:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params]))
        else:
            norm = torch.zeros(())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm.detach()

    def generator(self, offset: int = 0):
        """A seeded torch.Generator on the training device (differs per rank)."""
        g = self.torch.Generator(device=self.device if not self.device.startswith("mps") else "cpu")
        g.manual_seed(self.seed * 1000 + self.rank + offset)
        return g


def indexed_device(device: str, local_rank: int) -> str:
    """'cuda' becomes 'cuda:LOCAL_RANK': torch.cuda.set_device needs an index, and each torchrun rank takes its own GPU."""
    return f"cuda:{local_rank}" if device == "cuda" else device


def dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(device: str, world_size: int) -> None:
    import torch.distributed as dist

    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")


def broadcast(obj: Any, world_size: int) -> Any:
    if world_size == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_modules(modules: dict[str, Any]) -> None:
    import torch.distributed as dist

    for module in modules.values():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)
