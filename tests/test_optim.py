"""The shared AdamW builder: fused on CUDA, torch's default elsewhere, same update either way."""

from __future__ import annotations

import torch
from genloom.training.optim import adamw, fused_kwargs


def test_fused_only_on_cuda():
    assert fused_kwargs("cuda") == {"fused": True}
    assert fused_kwargs("cuda:1") == {"fused": True}
    assert fused_kwargs("cpu") == {}
    assert fused_kwargs("mps") == {}
    assert not adamw([torch.nn.Parameter(torch.zeros(2))], lr=1e-3, device="cpu").defaults["fused"]


def test_fused_update_matches_the_default_one():
    # torch also has a fused CPU kernel, so the CUDA choice can be checked here: same step, same weights.
    torch.manual_seed(0)
    init, grad = torch.randn(5, 3), torch.randn(5, 3)
    results = []
    for device in ("cpu", "cuda"):
        p = torch.nn.Parameter(init.clone())
        opt = adamw([p], lr=0.1, weight_decay=0.1, betas=(0.9, 0.99), device=device)
        assert bool(opt.defaults["fused"]) is (device == "cuda")
        for _ in range(3):
            p.grad = grad.clone()
            opt.step()
        results.append(p.detach().clone())
    assert not torch.equal(results[0], init)
    torch.testing.assert_close(results[0], results[1])
