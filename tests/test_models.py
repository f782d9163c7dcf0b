"""Generators and critics (METHODS B): parameter counts, pairs form, red/green separation, configs."""

import json

import numpy as np
import pytest
import torch

from napari_biogans.models import (
    DCGANCritic,
    DCGANGenerator,
    MultichannelCritic,
    MultichannelGenerator,
    OneClassGenerators,
    SeparableGenerator,
    StarGenerator,
    build_critic,
    build_generator,
    count_parameters,
    make_models,
    multichannel_size,
    native_channels,
    pairs_from_native,
    tower_plan,
)
from napari_biogans.models.fluorescence import towers_one_by_one

ARCHS = ["dcgan", "separable", "one-class", "independent-sep", "star", "multichannel", "multichannel-sep"]
SPLIT = ["separable", "independent-sep", "star", "multichannel-sep"]  # red / green latent split


def tiny(arch, n_classes=3, **kw):
    n = 1 if arch in ("dcgan", "separable") else n_classes
    kw = {"width": 4, "nz": 20, "critic_bn": True, **kw}
    return make_models(arch, n, **kw)


# -- B.8 parameter counts (full width; no forward pass) ---------------------------------------
@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda: DCGANGenerator(), 3_524_480),
        (lambda: SeparableGenerator(), 2_643_840),
        (lambda: StarGenerator(6), 11_455_040),
        (lambda: OneClassGenerators(6), 21_146_880),
        (lambda: OneClassGenerators(6, separable=True), 15_863_040),
        (lambda: MultichannelGenerator(6, nz=350, width=224), 43_158_080),
        (lambda: MultichannelGenerator(6, nz=350, width=224, separable=True), 37_874_240),
        (lambda: DCGANCritic(1, bn=False), 2_762_240),
        (lambda: DCGANCritic(1, bn=True), 2_764_032),
        (lambda: DCGANCritic(6, bn=False), 16_573_440),
        (lambda: MultichannelCritic(6, width=224, bn=False), 33_770_240),
    ],
)
def test_parameter_counts_match_methods_b8(build, expected):
    assert count_parameters(build()) == expected


def test_star_parts_and_published_multichannel_config():
    G = StarGenerator(6)
    red = sum(p.numel() for n, p in G.named_parameters() if ".red_" in n)
    assert red == 881_600  # one red tower; 6 x 1,762,240 green
    assert count_parameters(G) - red == 6 * 1_762_240
    assert count_parameters(StarGenerator(1)) == count_parameters(SeparableGenerator())
    assert multichannel_size(6, 64, 100) == (224, 350)
    G, D = make_models("multichannel-sep", 6, critic_bn=False)
    assert (G.nz, G.nz_red, G.config["width"], G.config["red_widths"]) == (350, 50, 224, [256, 128, 64, 32])
    assert count_parameters(G) == 37_874_240 and count_parameters(D) == 33_770_240


def test_construction_rule_for_other_sizes():
    assert tower_plan((48, 80)) == ((3, 5), 4)
    assert tower_plan((96, 160)) == ((3, 5), 5)
    G, D = make_models("star", 2, image_size=(96, 160), width=4, nz=20, critic_bn=False)
    x = G(torch.randn(2, 20))
    assert x.shape == (2, 2, 2, 96, 160) and D(x).shape == (2, 2)
    assert G.net.red_first.out_channels == (4 // 2) * 2**5 // 2  # base width 1024 at ngf 64, halved for red
    with pytest.raises(ValueError, match="halve evenly"):
        DCGANGenerator((50, 80), width=4)
    with pytest.raises(ValueError, match="too small"):
        DCGANCritic(1, (4, 8))


# -- the shared interface ---------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_interface_shapes_and_config_round_trip(arch):
    G, D = tiny(arch)
    C = 1 if arch in ("dcgan", "separable") else 3
    z = torch.randn(4, G.nz)
    x = G(z)
    assert x.shape == (4, C, 2, 48, 80) and G.n_classes == C and G.image_size == (48, 80)
    assert x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (4, D.n_scores) and D.n_scores == (1 if arch.startswith("multichannel") else C)
    assert (G.nz_red > 0) == (arch in SPLIT)
    assert G.shares_red == (arch not in ("one-class", "independent-sep"))
    if G.shares_red:
        assert torch.equal(x[:, :1, 0].expand(-1, C, -1, -1), x[:, :, 0])
    for model, build in ((G, build_generator), (D, build_critic)):
        config = json.loads(json.dumps(model.config))  # JSON-serialisable, survives a round trip
        again = build(config)
        assert again.config == model.config
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        assert {k: v.shape for k, v in again.state_dict().items()} == shapes
        again.load_state_dict(model.state_dict())
    G.eval()
    again = build_generator(G.config).eval()
    again.load_state_dict(G.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again(z), G(z))


@pytest.mark.parametrize("arch", ARCHS)
def test_render_red_is_the_first_class_red_of_the_full_render(arch):
    from napari_biogans.sampling import render, render_red

    G, _ = tiny(arch)
    G.eval()
    z = torch.randn(5, G.nz).numpy()
    red = render_red(G, z, batch_size=2)
    assert red.shape == (5, 48, 80)
    np.testing.assert_allclose(red, render(G, z)[:, 0, 0], atol=1e-5)


def test_unknown_names_and_bad_classes():
    with pytest.raises(ValueError, match="unknown model"):
        make_models("wgan", 1, critic_bn=True)
    with pytest.raises(ValueError, match="joint model"):
        make_models("dcgan", 3, critic_bn=True)
    with pytest.raises(ValueError, match="unknown generator"):
        build_generator({"arch": "nope"})
    with pytest.raises(KeyError):
        build_critic({"width": 4})
    with pytest.raises(TypeError):
        build_generator({"arch": "dcgan", "colour": 3})
    G, _ = make_models("DCGAN-sep-multichannel", 2, width=4, critic_bn=True)  # METHODS I.1: case-folded
    assert G.config["separable"] and G.nz_red > 0


# -- red / green separation -------------------------------------------------------------------
@pytest.mark.parametrize("arch", SPLIT)
@pytest.mark.parametrize("train", [True, False])
def test_red_does_not_depend_on_green_noise(arch, train):
    torch.manual_seed(0)
    G, _ = tiny(arch)
    with torch.no_grad():  # larger weights than B.7 so that eval-mode outputs are not ~0
        for p in G.parameters():
            p.mul_(10 if p.dim() == 4 else 1)
    G.train(train)
    z = torch.randn(6, G.nz)
    z2 = z.clone()
    z2[:, G.nz_red :] = torch.randn(6, G.nz - G.nz_red)
    with torch.no_grad():
        a, b = G(z), G(z2)
    torch.testing.assert_close(a[:, :, 0], b[:, :, 0], rtol=0, atol=1e-6)
    assert (a[:, :, 1] - b[:, :, 1]).abs().max() > 1e-4  # the green does change
    z3 = z.clone()
    z3[:, : G.nz_red] = torch.randn(6, G.nz_red)
    with torch.no_grad():
        assert (G(z3)[:, :, 0] - a[:, :, 0]).abs().max() > 1e-4


def test_star_tower_depends_only_on_its_own_weights():
    torch.manual_seed(0)
    G = StarGenerator(3, width=4, nz=20)
    z = torch.randn(5, 20)
    for c in range(3):
        G.zero_grad()
        G(z)[:, c, 1].square().sum().backward()
        for name, p in G.named_parameters():
            if ".red_" in name:
                continue
            grad = p.grad
            dim = 0 if "green_from_green" in name or "green_norms" in name else 1
            size = grad.shape[dim] // 3
            for other in range(3):
                block = grad.narrow(dim, other * size, size)
                if other == c:
                    assert block.abs().sum() > 0, (name, c)
                else:
                    assert block.abs().sum() == 0, (name, c, other)
    # a tower on its own (red tower + its green slice) reproduces its pair, in train and eval mode
    for mode in (True, False):
        G.train(mode)
        with torch.no_grad():
            out = G(z)
            for c in range(3):
                torch.testing.assert_close(G.tower(c)(z)[:, 0], out[:, c], rtol=1e-4, atol=1e-5)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("arch", ["star", "independent-sep"])
def test_towers_one_by_one_match_the_grouped_convolutions(arch):
    """The star generator's two execution paths (grouped convolutions; a loop over the towers'
    weight slices, the CPU default) and ``generate`` for chosen classes give the same pixels."""
    torch.manual_seed(0)
    G, _ = tiny(arch)
    G.train()(torch.randn(8, G.nz))  # BN running statistics that are not the identity
    G.eval()
    z = torch.randn(5, G.nz)
    labels = torch.tensor([[2, 0], [1, 1], [0, 2], [2, 2], [1, 0]])
    with torch.no_grad():
        if arch == "star":
            G.execution = "grouped"
            grouped = G(z)
            G.execution = "per-tower"
            torch.testing.assert_close(G(z), grouped, rtol=1e-4, atol=1e-5)
            G.execution = "auto"
        everything = G(z)
        torch.testing.assert_close(G.generate(z, labels), everything[torch.arange(5)[:, None], labels],
                                   rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="execution"):
        towers_one_by_one(torch.device("cpu"), 64, "fast")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert towers_one_by_one(cpu, 64) and not towers_one_by_one(cpu, 16) and not towers_one_by_one(cuda, 64)


def test_one_class_generators_are_independent_and_share_z():
    torch.manual_seed(0)
    G, _ = tiny("one-class")
    G.eval()
    z = torch.randn(3, G.nz)
    with torch.no_grad():
        out = G(z)
        for c, g in enumerate(G.generators):
            torch.testing.assert_close(g(z)[:, 0], out[:, c])
    assert not torch.equal(out[:, 0, 0], out[:, 1, 0])  # each class has its own red


def test_multichannel_native_and_pairs_form():
    torch.manual_seed(0)
    for sep in (False, True):
        G, D = tiny("multichannel", separable=sep)
        G.eval()
        z = torch.randn(2, G.nz)
        with torch.no_grad():
            native, pairs = G.native(z), G(z)
        assert native.shape == (2, 4, 48, 80)
        torch.testing.assert_close(pairs_from_native(native), pairs)
        torch.testing.assert_close(native_channels(pairs), native)
        # the critic reads red from pair 0 only
        other = pairs.clone()
        other[:, 1:, 0] = 0.3
        D.eval()
        with torch.no_grad():
            torch.testing.assert_close(D(other), D(pairs))


def test_pair_critics_are_independent():
    torch.manual_seed(0)
    D = DCGANCritic(3, width=4, bn=False)
    x = torch.rand(4, 3, 2, 48, 80) * 2 - 1
    y = x.clone()
    y[:, 1] = -y[:, 1]
    with torch.no_grad():
        a, b = D(x), D(y)
    torch.testing.assert_close(a[:, [0, 2]], b[:, [0, 2]])
    assert (a[:, 1] - b[:, 1]).abs().max() > 0


def test_initialisation_b7_and_no_biases():
    torch.manual_seed(0)
    G, D = make_models("star", 6, critic_bn=True)
    convs = [m for m in [*G.modules(), *D.modules()] if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs and all(m.bias is None for m in convs)
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.std().item() - 0.02) < 1e-3 and abs(weights.mean().item()) < 1e-3
    norms = [m for m in [*G.modules(), *D.modules()] if isinstance(m, torch.nn.BatchNorm2d)]
    gamma = torch.cat([m.weight for m in norms])
    assert abs(gamma.mean().item() - 1) < 2e-3 and abs(gamma.std().item() - 0.02) < 2e-3
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in norms)


def test_critic_options_bn_and_spectral_norm():
    D = DCGANCritic(2, width=4, bn=False, spectral_norm=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 10 and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in DCGANCritic(2, width=4, bn=True).modules()) == 6
    D.train()
    x = torch.rand(3, 2, 2, 48, 80)
    for _ in range(30):  # power iterations converge: each layer's spectral norm ~1
        D(x)
    for conv in convs:
        w = conv.weight.flatten(1)
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.05)
    _, M = make_models("multichannel", 2, width=4, critic_bn=False, spectral_norm=True)
    assert build_critic(M.config).config["spectral_norm"] is True


@pytest.mark.parametrize("arch", ["separable", "star", "one-class", "multichannel-sep"])
def test_channels_last_and_autocast(arch):
    torch.manual_seed(0)
    G, D = tiny(arch)
    G.eval(), D.eval()
    z = torch.randn(3, G.nz)
    with torch.no_grad():
        ref = G(z)
        ref_scores = D(ref)
        G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        torch.testing.assert_close(G(z), ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(D(ref), ref_scores, rtol=1e-4, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x = G(z)
            s = D(x)
    assert x.dtype == torch.bfloat16 and torch.isfinite(s.float()).all()
    assert (x.float() - ref).abs().max() < 0.1


@pytest.mark.parametrize("arch", ["star", "multichannel-sep"])
def test_forward_traces_as_one_graph(arch):
    """No data-dependent Python control flow: torch.compile(fullgraph=True) captures G and D."""
    torch._dynamo.reset()
    G, D = tiny(arch, spectral_norm=True)
    z = torch.randn(2, G.nz)
    x = torch.compile(G, backend="eager", fullgraph=True)(z)
    s = torch.compile(D, backend="eager", fullgraph=True)(x)
    assert s.shape == (2, D.n_scores)
