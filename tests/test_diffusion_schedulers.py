"""Noise schedules and samplers, driven with dummy ε-models: no database, no training."""

from __future__ import annotations

import math

import pytest
import torch

from genloom.architectures.ddim_scheduler import DDIMScheduler
from genloom.architectures.ddpm_scheduler import DDPMScheduler
from genloom.architectures.noise_schedules import cosine_beta_schedule, linear_beta_schedule
from genloom.errors import BadInput


# --------------------------------------------------------------------------- schedules: closed forms


def test_linear_schedule_is_ho_et_al_closed_form():
    betas = linear_beta_schedule(1000)
    assert betas.shape == (1000,)
    t = torch.arange(1000, dtype=torch.float64)
    assert torch.allclose(betas, 1e-4 + t * (0.02 - 1e-4) / 999, atol=1e-12)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    alpha_bar_T = torch.prod(1 - betas).item()
    assert alpha_bar_T == pytest.approx(4.035e-5, rel=1e-3)  # x_T is (almost) pure noise


def test_cosine_schedule_matches_nichol_dhariwal_alpha_bar():
    T, s = 1000, 0.008
    betas = cosine_beta_schedule(T)
    alpha_bar = torch.cumprod(1 - betas, 0)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 1, 10, 250, 500, 900, 990):  # ᾱ_t = f(t+1)/f(0) for 0-based t, before clipping bites
        assert alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert betas.max().item() == pytest.approx(0.999)  # clipped at the end, as in the paper
    assert torch.all(betas[1:] >= betas[:-1])


# --------------------------------------------------------------------------- schedulers: pinned timesteps


def test_ddpm_visits_every_timestep_by_default_and_pins_strided_ones():
    sched = DDPMScheduler()
    assert sched.timesteps.tolist() == list(range(999, -1, -1))
    sched.set_timesteps(10)
    assert sched.timesteps.tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    with pytest.raises(BadInput, match="between 1 and 1000"):
        sched.set_timesteps(1001)


def test_ddim_default_is_50_steps_leading_spacing():
    sched = DDIMScheduler()
    assert len(sched.timesteps) == 50
    assert sched.timesteps[:4].tolist() == [980, 960, 940, 920]
    assert sched.timesteps[-1].item() == 0
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == [750, 500, 250, 0]
    with pytest.raises(BadInput):
        sched.set_timesteps(0)


def test_add_noise_is_the_forward_process():
    sched = DDPMScheduler()
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 500, 999])
    ab = torch.cumprod(1 - linear_beta_schedule(1000), 0).float()
    expected = ab[t].sqrt().view(-1, 1, 1, 1) * x0 + (1 - ab[t]).sqrt().view(-1, 1, 1, 1) * noise
    assert torch.allclose(sched.add_noise(x0, noise, t), expected, atol=1e-5)


# --------------------------------------------------------------------------- schedulers driven by dummy models


def _oracle(sched, x0):
    """A perfect ε-model for a known x_0: ε = (x_t − √ᾱ_t·x_0)/√(1−ᾱ_t)."""
    def eps(x_t, t):
        ab = sched.alphas_cumprod[t].item()
        return (x_t - ab**0.5 * x0) / (1 - ab) ** 0.5
    return eps


@pytest.mark.parametrize("make", [lambda: DDIMScheduler(eta=0.0), lambda: DDIMScheduler(eta=1.0), DDPMScheduler])
def test_a_perfect_model_leads_every_sampler_back_to_x0(make):
    sched = make()
    if isinstance(sched, DDPMScheduler):
        sched.set_timesteps(100)
    x0 = torch.rand(2, 1, 8, 8) * 1.6 - 0.8
    model = _oracle(sched, x0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(x0.shape, generator=g)
    visited = []
    for t in sched.timesteps.tolist():
        visited.append(t)
        x = sched.step(model(x, t), t, x, generator=g)
    assert visited[-1] == 0
    assert torch.allclose(x, x0, atol=1e-4)


def test_ddim_eta0_is_deterministic_and_eta1_uses_the_generator():
    x_t = torch.randn(2, 1, 8, 8)
    eps = torch.randn(2, 1, 8, 8)
    det = DDIMScheduler(eta=0.0)
    a = det.step(eps, 980, x_t, generator=torch.Generator().manual_seed(1))
    b = det.step(eps, 980, x_t, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    sto = DDIMScheduler(eta=1.0)
    c = sto.step(eps, 980, x_t, generator=torch.Generator().manual_seed(1))
    d = sto.step(eps, 980, x_t, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(c, d)
    assert torch.equal(c, sto.step(eps, 980, x_t, generator=torch.Generator().manual_seed(1)))


def test_ddpm_last_step_adds_no_noise_and_earlier_steps_do():
    sched = DDPMScheduler()
    x_t, eps = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    last = [sched.step(eps, 0, x_t, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    assert torch.equal(*last)
    mid = [sched.step(eps, 500, x_t, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    assert not torch.equal(*mid)


# --------------------------------------------------------------------------- the network and guidance


def test_unet_shapes_and_null_condition():
    from genloom.architectures.unet import UNet, UNetConfig

    torch.manual_seed(0)
    for size in (8, 28):
        net = UNet(UNetConfig(image_size=size, base_channels=8, num_classes=10, text_embed_dim=384))
        torch.nn.init.normal_(net.conv_out.weight)  # zero-initialised output would hide differences
        x, t = torch.randn(3, 1, size, size), torch.tensor([1, 500, 999])
        labels, text = torch.tensor([1, 2, 3]), torch.randn(3, 384)
        out = net(x, t, labels, text)
        assert out.shape == x.shape
    # dropping the condition (keep=False) is the same as giving none
    net = UNet(UNetConfig(image_size=8, base_channels=8, num_classes=10))
    torch.nn.init.normal_(net.conv_out.weight)
    keep = torch.zeros(3, dtype=torch.bool)
    assert torch.allclose(net(x[:, :, :8, :8], t, labels, keep=keep), net(x[:, :, :8, :8], t))
    assert not torch.allclose(net(x[:, :, :8, :8], t, labels), net(x[:, :, :8, :8], t))


def test_classifier_free_guidance_formula():
    from genloom.architectures.diffusion import Diffusion, DiffusionConfig

    torch.manual_seed(0)
    model = Diffusion(DiffusionConfig(image_size=8, base_channels=8, channel_mults=(1, 2), conditioning="class", num_classes=10))
    torch.nn.init.normal_(model.unet.conv_out.weight)
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([10, 700]), torch.tensor([3, 7])
    cond = model.unet(x, t, class_labels=y)
    uncond = model.unet(x, t)
    w = 2.5
    assert torch.allclose(model.guided_eps(x, t, y, None, w), (1 + w) * cond - w * uncond, atol=1e-4)
    assert torch.allclose(model.guided_eps(x, t, y, None, 0.0), cond, atol=1e-4)


def test_training_loss_is_a_scalar_that_backpropagates():
    from genloom.architectures.diffusion import Diffusion, DiffusionConfig

    model = Diffusion(DiffusionConfig(image_size=8, base_channels=8, channel_mults=(1, 2), conditioning="text"))
    loss = model(torch.rand(4, 1, 8, 8) * 2 - 1, text_embeds=torch.randn(4, 384))
    assert loss.dim() == 0 and loss.item() > 0
    loss.backward()
    assert model.unet.conv_out.weight.grad is not None


def test_ema_decay_warms_up():
    from genloom.architectures.diffusion import EMA

    net = torch.nn.Linear(2, 2)
    ema = EMA(net, decay=0.999)
    before = ema.shadow.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)  # first decay = min(0.999, 2/11): mostly the new weights
    assert torch.allclose(ema.shadow.weight, before + (1 - 2 / 11), atol=1e-6)
