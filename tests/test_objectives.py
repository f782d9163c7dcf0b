"""GAN objectives (METHODS C.1, G): one step for every model, learning on a toy, GP, clipping."""

import math

import pytest
import torch
from torch import nn

from napari_biogans.models import make_models
from napari_biogans.training.objectives import OBJECTIVES, Objective, get_objective, gradient_penalty

ARCHS = ["dcgan", "separable", "one-class", "independent-sep", "star", "multichannel", "multichannel-sep"]


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
@pytest.mark.parametrize("arch", ARCHS)
def test_every_model_takes_a_critic_and_a_generator_step(arch, objective):
    torch.manual_seed(0)
    obj = get_objective(objective)
    C = 1 if arch in ("dcgan", "separable") else 3
    G, D = make_models(arch, C, width=8, nz=20, critic_bn=obj.critic_bn)
    opt_G, opt_D = obj.make_optimizers(G, D)
    real = torch.rand(4, C, 2, 48, 80) * 2 - 1
    d_before = [p.detach().clone() for p in D.parameters()]
    g_before = [p.detach().clone() for p in G.parameters()]

    with torch.no_grad():
        fake = G(torch.randn(4, G.nz))
    loss, stats = obj.critic_loss(D, real, fake)
    assert loss.dim() == 0 and all(torch.is_tensor(v) and v.dim() == 0 and not v.requires_grad for v in stats.values())
    opt_D.zero_grad()
    loss.backward()
    opt_D.step()
    obj.after_critic_step(D)

    for p in D.parameters():
        p.requires_grad_(False)
    g_loss = obj.generator_loss(D, G(torch.randn(4, G.nz)))
    opt_G.zero_grad()
    g_loss.backward()
    opt_G.step()

    assert math.isfinite(loss.item()) and math.isfinite(g_loss.item())
    assert any(not torch.equal(a, b) for a, b in zip(d_before, D.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, G.parameters()))


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_critic_learns_a_separable_toy(objective):
    """Real = constant +0.5 cells, fake = a frozen generator's: the critic loss goes down."""
    torch.manual_seed(0)
    obj = get_objective(objective)
    G, D = make_models("dcgan", 1, image_size=(16, 16), width=8, nz=8, critic_bn=obj.critic_bn)
    G.eval().requires_grad_(False)
    _, opt = obj.make_optimizers(G, D)
    real = torch.full((16, 1, 2, 16, 16), 0.5)
    fake = G(torch.randn(16, G.nz))
    losses = []
    for _ in range(200):
        loss, _ = obj.critic_loss(D, real, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.after_critic_step(D)
        losses.append(loss.detach())
    losses = torch.stack(losses)
    assert torch.isfinite(losses).all()
    assert losses[-10:].mean() < losses[:10].mean() - 1e-3, (losses[:10], losses[-10:])


class LinearCritic(nn.Module):
    """D(x)_c = <w_c, x_c> per pair, with ‖w_c‖ = norms[c]: the gradient has that norm everywhere."""

    def __init__(self, norms, shape=(2, 6, 10)):
        super().__init__()
        w = torch.randn(len(norms), *shape)
        w = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * torch.tensor(norms).view(-1, 1, 1, 1)
        self.w = nn.Parameter(w)
        self.n_scores = len(norms)
        self.seen = None

    def forward(self, x):
        self.seen = x.detach()
        return (x * self.w).flatten(2).sum(2)


class WholeSampleCritic(nn.Module):
    """One score per sample over all pairs (like the multichannel critic), gradient norm ``norm``."""

    def __init__(self, norm, pairs=3, shape=(2, 6, 10)):
        super().__init__()
        w = torch.randn(pairs, *shape)
        self.w = nn.Parameter(w * norm / w.norm())
        self.n_scores = 1
        self.seen = None

    def forward(self, x):
        self.seen = x.detach()
        return (x * self.w).flatten(1).sum(1, keepdim=True)


def test_gradient_penalty_zero_for_unit_gradients_and_positive_otherwise():
    torch.manual_seed(0)
    real, fake = torch.randn(8, 3, 2, 6, 10), torch.randn(8, 3, 2, 6, 10)
    assert gradient_penalty(LinearCritic([1.0, 1.0, 1.0]), real, fake).item() == pytest.approx(0, abs=1e-10)
    # per-pair norms: mean over classes of (n_c - 1)^2
    gp = gradient_penalty(LinearCritic([1.0, 2.0, 0.5]), real, fake)
    assert gp.item() == pytest.approx((0 + 1 + 0.25) / 3, rel=1e-5)
    # a one-column critic: one norm over the whole sample
    assert gradient_penalty(WholeSampleCritic(1.0), real, fake).item() == pytest.approx(0, abs=1e-10)
    assert gradient_penalty(WholeSampleCritic(3.0), real, fake).item() == pytest.approx(4.0, rel=1e-5)
    # batches of different sizes are cut to the shorter; the penalty trains the critic
    critic = LinearCritic([2.0, 2.0, 2.0])
    gp = gradient_penalty(critic, real, fake[:5])
    gp.backward()
    assert gp.item() == pytest.approx(1.0, rel=1e-5) and critic.w.grad.abs().sum() > 0
    # a real DCGAN critic at B.7 initialisation has tiny gradients: penalty close to 1
    _, D = make_models("star", 3, width=4, critic_bn=False)
    assert 0.5 < gradient_penalty(D, torch.randn(4, 3, 2, 48, 80), torch.randn(4, 3, 2, 48, 80)).item() <= 1.0


def test_gradient_penalty_draws_one_epsilon_per_sample_and_class():
    real, fake = torch.ones(4, 3, 2, 6, 10), torch.zeros(4, 3, 2, 6, 10)
    critic = LinearCritic([1.0, 1.0, 1.0])
    gradient_penalty(critic, real, fake)
    eps = critic.seen  # the mix of ones and zeros is ε itself
    assert torch.equal(eps, eps[:, :, :1, :1, :1].expand_as(eps))  # constant over each pair
    assert eps[:, :, 0, 0, 0].unique().numel() == 12  # and drawn per sample and class
    whole = WholeSampleCritic(1.0)
    gradient_penalty(whole, real, fake)
    eps = whole.seen
    assert torch.equal(eps, eps[:, :1, :1, :1, :1].expand_as(eps))  # one ε per sample: reds stay consistent
    assert eps[:, 0, 0, 0, 0].unique().numel() == 4


def test_wgan_sign_convention_and_losses():
    real, fake = torch.ones(4, 3, 2, 6, 10), -torch.ones(4, 3, 2, 6, 10)
    critic = LinearCritic([1.0, 1.0, 1.0])
    d_real, d_fake = critic(real).mean(), critic(fake).mean()
    loss, stats = get_objective("wgan").critic_loss(critic, real, fake)
    assert loss.item() == pytest.approx((d_real - d_fake).item())  # real low, fake high (METHODS C.1)
    assert stats["wasserstein"].item() == pytest.approx((d_fake - d_real).item())
    assert get_objective("wgan-gp").generator_loss(critic, fake).item() == pytest.approx(d_fake.item())
    loss, stats = get_objective("wgan-gp").critic_loss(critic, real, fake)
    assert stats["gp"].item() == pytest.approx(0, abs=1e-10) and loss.item() == pytest.approx((d_real - d_fake).item())
    const = lambda v: (lambda x: torch.full((x.shape[0], 3), float(v)))  # noqa: E731
    bce0 = math.log(2)
    assert get_objective("gan").critic_loss(const(0), real, fake)[0].item() == pytest.approx(2 * bce0)
    assert get_objective("gan").generator_loss(const(0), fake).item() == pytest.approx(bce0)
    assert get_objective("lsgan").critic_loss(const(1), real, fake)[0].item() == pytest.approx(0.5)
    assert get_objective("lsgan").generator_loss(const(1), fake).item() == pytest.approx(0)
    assert get_objective("hinge").critic_loss(const(0.5), real, fake)[0].item() == pytest.approx(0.5 + 1.5)
    assert get_objective("hinge").generator_loss(const(0.5), fake).item() == pytest.approx(-0.5)


def test_wgan_clipping_keeps_every_parameter_within_001():
    torch.manual_seed(0)
    obj = get_objective("wgan")
    G, D = make_models("star", 2, width=4, nz=20, critic_bn=True)
    _, opt = obj.make_optimizers(G, D, lr=0.05)  # large steps push against the clip
    with torch.no_grad():
        for p in D.parameters():
            p.normal_(0, 1)
    obj.after_critic_step(D)
    assert all(p.abs().max() <= 0.01 for p in D.parameters())
    real = torch.rand(4, 2, 2, 48, 80)
    for _ in range(3):
        loss, _ = obj.critic_loss(D, real, G(torch.randn(4, G.nz)).detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.after_critic_step(D)
        params = torch.cat([p.detach().flatten() for p in D.parameters()])
        assert params.abs().max() <= 0.01 and (params.abs() == 0.01).any()  # BN terms clipped too
    assert get_objective("wgan-gp").after_critic_step(D) is None


def test_schedule_optimisers_and_names():
    wgan = get_objective("wgan")
    assert [wgan.n_critic_steps(i) for i in (0, 24, 25, 499, 500, 501, 1000)] == [100, 100, 5, 5, 100, 5, 100]
    assert {n: get_objective(n).n_critic_steps(0) for n in OBJECTIVES} == {
        "gan": 1, "wgan": 100, "wgan-gp": 5, "lsgan": 1, "hinge": 5
    }
    assert get_objective("wgan-gp").n_critic_steps(500) == 5
    assert {n: get_objective(n).critic_bn for n in OBJECTIVES} == {
        "gan": True, "wgan": True, "wgan-gp": False, "lsgan": True, "hinge": False
    }
    G, D = make_models("dcgan", 1, width=4, critic_bn=True)
    expected = {
        "gan": (torch.optim.Adam, 2e-4, (0.5, 0.999)),
        "wgan": (torch.optim.RMSprop, 5e-5, None),
        "wgan-gp": (torch.optim.Adam, 1e-4, (0.0, 0.9)),
        "lsgan": (torch.optim.Adam, 2e-4, (0.5, 0.999)),
        "hinge": (torch.optim.Adam, 2e-4, (0.0, 0.9)),
    }
    for name, (kind, lr, betas) in expected.items():
        opt_G, opt_D = get_objective(name).make_optimizers(G, D)
        for opt, model in ((opt_G, G), (opt_D, D)):
            assert type(opt) is kind and opt.defaults["lr"] == lr
            assert betas is None or opt.defaults["betas"] == betas
            n_params = sum(p.numel() for g in opt.param_groups for p in g["params"])
            assert n_params == sum(p.numel() for p in model.parameters())
    assert get_objective("gan").make_optimizers(G, D, lr=1e-3)[1].defaults["lr"] == 1e-3
    assert get_objective("WGAN_GP") is get_objective("wgan-gp") is get_objective("wgangp")
    assert get_objective("wgan").clip == 0.01 and get_objective("wgan-gp").gp_weight == 10.0
    with pytest.raises(ValueError, match="unknown objective"):
        get_objective("vae")
    with pytest.raises(Exception):
        get_objective("gan").lr = 1.0  # frozen
    assert isinstance(get_objective("hinge"), Objective)


def test_penalty_through_a_compiled_critic_uses_its_eager_module():
    """AOTAutograd has no double backward: the GP must bypass a torch.compile wrapper."""
    torch._dynamo.reset()
    _, D = make_models("star", 2, width=4, critic_bn=False)
    compiled = torch.compile(D, backend="eager")
    real, fake = torch.rand(2, 2, 2, 48, 80), torch.rand(2, 2, 2, 48, 80)
    torch.manual_seed(1)
    a, _ = get_objective("wgan-gp").critic_loss(compiled, real, fake)
    a.backward()
    torch.manual_seed(1)
    b, _ = get_objective("wgan-gp").critic_loss(D, real, fake)
    torch.testing.assert_close(a, b)
