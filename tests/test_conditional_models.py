"""Conditional models (cGAN, masked multichannel, projection) and the 41 synthetic classes."""

import json
import math

import numpy as np
import pytest
import torch

from napari_biogans import checkpoints
from napari_biogans.data.simulator import PROTEINS, render_cell, simulate_stack
from napari_biogans.data.synthetic_classes import synthetic_classes, synthetic_stack
from napari_biogans.models import (
    CGANCritic,
    CGANGenerator,
    MaskedMultichannelCritic,
    ProjectionCritic,
    ProjectionGenerator,
    build_critic,
    build_generator,
    count_parameters,
    make_models,
    masked_composites,
)
from napari_biogans.sampling import sample
from napari_biogans.training.trainer import TrainConfig, Trainer

ARCHS = ["cgan", "multichannel-masked", "projection"]
# one critic step for the GAN-style objectives; the gradient penalty goes through each critic on resume
OBJECTIVE = {"cgan": "gan", "multichannel-masked": "lsgan", "projection": "hinge"}
TINY = dict(width=4, nz=8, batch_size=2, device="cpu", log_every=1, preview_every=1, preview_count=2,
            checkpoint_every=10)


@pytest.fixture(scope="module")
def stacks():
    """1 and 6 simulated proteins, and the 41 SYNTHETIC classes; two cells each."""
    six = ["Alp14", "Arp3", "Cki2", "Mkh1", "Sid2", "Tea1"]
    return {1: simulate_stack(2, ["Tea1"], seed=3), 6: simulate_stack(2, six, seed=3), 41: synthetic_stack(2, seed=3)}


def _larger(module, factor=10.0):
    """Conv weights above B.7's N(0, 0.02), so that eval-mode outputs are not ~0."""
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(factor if p.dim() == 4 else 1.0)


# -- training through the one trainer ---------------------------------------------------------
@pytest.mark.parametrize("n_classes", [1, 6, 41])
@pytest.mark.parametrize("arch", ARCHS)
def test_each_model_trains_checkpoints_and_samples(tmp_path, stacks, one_torch_thread, arch, n_classes):
    cells = stacks[n_classes]
    config = TrainConfig(arch=arch, objective=OBJECTIVE[arch], iterations=1, **TINY)
    trainer = Trainer(config, cells, tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    events = [u.payload for u in trainer.run()]
    assert events[-1].finished and all(math.isfinite(v) for v in events[0].losses.values())
    assert events[0].preview.shape == (2, n_classes, 2, 48, 80)
    assert any(not torch.equal(before[k], v) for k, v in trainer.G.state_dict().items())

    generator, meta = checkpoints.load_generator(tmp_path / "run" / "generator.safetensors")
    assert type(generator) is type(trainer.G) and generator.config == trainer.G.config
    z = torch.randn(3, generator.nz)
    with torch.no_grad():
        torch.testing.assert_close(generator(z), trainer.G.eval()(z))
    samples = sample(generator, meta, n=3, seed=1)
    proteins = cells.class_names if n_classes > 1 else ["any protein"]
    if generator.shares_red or n_classes == 1:  # one red Bgs4, then a green per protein
        assert samples.channel_names == ["Bgs4", *proteins]
    else:  # cGAN: each class draws its own red cell, shown before its green
        assert samples.channel_names == [name for p in proteins for name in (f"Bgs4 ({p})", p)]
    assert samples.images.shape == (3, len(samples.channel_names), 48, 80)


@pytest.mark.parametrize("arch", ARCHS)
def test_resume_equals_an_uninterrupted_run(tmp_path, stacks, one_torch_thread, arch):
    config = TrainConfig(arch=arch, objective="wgan-gp", iterations=2, **TINY)
    straight = Trainer(config, stacks[6], tmp_path / "straight")
    list(straight.run())
    first = Trainer(config, stacks[6], tmp_path / "split")
    for event in first.run():
        first.request_stop()
    assert first.iteration == 1
    resumed = Trainer(config, stacks[6], tmp_path / "split", resume=True)
    list(resumed.run())
    for mine, theirs in ((resumed.G, straight.G), (resumed.D, straight.D)):  # spectral norm's u, v too
        for key, value in theirs.state_dict().items():
            assert torch.equal(value, mine.state_dict()[key]), key


# -- the label changes the output (and only where it should) -----------------------------------
def test_projection_term_changes_the_score_with_the_label_and_not_otherwise():
    torch.manual_seed(0)
    D = ProjectionCritic(6, width=4).eval()  # eval: spectral norm without a power step per call
    x = torch.rand(3, 1, 2, 48, 80) * 2 - 1
    y = torch.zeros(3, 1, dtype=torch.long)
    with torch.no_grad():
        a, b = D.score(x, y), D.score(x, y + 2)
        phi, e = D.phi(x), D.embed.weight
        assert (a - b).abs().min() > 1e-4
        # D(x, y) - D(x, y') = <e_y - e_y', φ(x)>: the label acts through the projection alone
        torch.testing.assert_close(a - b, ((e[0] - e[2]) * phi).sum(-1))
        scores = D(x.expand(-1, 6, -1, -1, -1))  # pairs form: the same cell read as each class
        assert scores.std(dim=1).min() > 1e-4
    torch.nn.utils.parametrize.remove_parametrizations(D.embed, "weight")
    with torch.no_grad():
        D.embed.weight.zero_()
        scores = D(x.expand(-1, 6, -1, -1, -1))
        torch.testing.assert_close(scores, scores[:, :1].expand_as(scores))
        torch.testing.assert_close(scores[:, 0], D.linear(phi).squeeze(-1)[:, 0])  # ψ(φ(x)) only


def test_projection_generator_shares_one_red_and_one_network():
    torch.manual_seed(0)
    G = ProjectionGenerator(6, width=4, nz=8)
    _larger(G)
    with torch.no_grad():  # trained classes differ; at initialisation every class has γ = 1, β = 0
        for norm in G.green_norms:
            norm.gain.weight.normal_(1.0, 0.5)
            norm.bias.weight.normal_(0.0, 0.5)
    z = torch.randn(3, 8)
    for train in (True, False):
        G.train(train)
        with torch.no_grad():
            x = G(z)
        assert torch.equal(x[:, :, 0], x[:, :1, 0].expand(-1, 6, -1, -1))  # one red per sample
        assert (x[:, 0, 1] - x[:, 1, 1]).abs().max() > 1e-3  # greens differ by class
    z2 = z.clone()
    z2[:, G.nz_red :] = torch.randn(3, 8 - G.nz_red)
    with torch.no_grad():
        torch.testing.assert_close(G(z2)[:, :, 0], x[:, :, 0], rtol=0, atol=1e-6)  # red reads z[:, :nz_red]
        torch.testing.assert_close(G.generate(z, torch.full((3, 1), 4))[:, 0], x[:, 4])
    # one set of weights for all classes: only the class embeddings grow with C
    green_widths = sum(norm.norm.num_features for norm in G.green_norms)
    one = ProjectionGenerator(1, width=4, nz=8)
    assert count_parameters(G) - count_parameters(one) == 5 * 2 * green_widths


def test_cgan_output_and_score_change_with_the_label():
    torch.manual_seed(0)
    G, D = make_models("cgan", 6, width=4, nz=8, critic_bn=False)
    _larger(G)
    G.eval(), D.eval()
    assert not G.shares_red and G.nz_red == 0
    z = torch.randn(3, 8)
    zeros = torch.zeros(3, 1, dtype=torch.long)
    with torch.no_grad():
        x = G(z)
        a, b = G.generate(z, zeros), G.generate(z, zeros + 1)
        torch.testing.assert_close(a[:, 0], x[:, 0])
        torch.testing.assert_close(b[:, 0], x[:, 1])
        assert (a[:, 0, 0] - b[:, 0, 0]).abs().max() > 1e-3  # each class draws its own red
        assert (a[:, 0, 1] - b[:, 0, 1]).abs().max() > 1e-3
        assert (D.score(a, zeros) - D.score(a, zeros + 1)).abs().min() > 0


def test_masking_hides_every_other_green():
    x = torch.rand(2, 3, 2, 8, 10) * 2 - 1
    masked = masked_composites(x, torch.arange(3).expand(2, 3), 3)
    assert masked.shape == (2, 3, 4, 8, 10)
    for c in range(3):
        assert torch.equal(masked[:, c, 0], x[:, c, 0]) and torch.equal(masked[:, c, 1 + c], x[:, c, 1])
        assert (masked[:, c, [1 + k for k in range(3) if k != c]] == -1).all()
    masked = masked_composites(x[:, :1], torch.tensor([[2], [0]]), 3)  # explicit labels pick the slot
    assert torch.equal(masked[0, 0, 3], x[0, 0, 1]) and (masked[0, 0, 1:3] == -1).all()
    assert torch.equal(masked[1, 0, 1], x[1, 0, 1]) and (masked[1, 0, 2:] == -1).all()


def test_masked_critic_column_reads_only_its_own_pair():
    torch.manual_seed(0)
    G, D = make_models("multichannel-masked", 3, width=4, nz=8, critic_bn=False)
    G.eval(), D.eval()
    with torch.no_grad():
        fake = G(torch.randn(4, G.nz))
        other = fake.clone()
        other[:, [0, 2]] = torch.rand(4, 2, 2, 48, 80) * 2 - 1  # the other classes' reds and greens
        a, b = D(fake), D(other)
    assert a.shape == (4, 3)
    torch.testing.assert_close(a[:, 1], b[:, 1])
    assert (a[:, [0, 2]] - b[:, [0, 2]]).abs().min() > 0


# -- construction -----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_configs_rebuild_the_same_models(arch):
    torch.manual_seed(0)
    G, D = make_models(arch, 3, width=4, nz=8, critic_bn=True, spectral_norm=True)
    assert D.n_scores == 3 and G.n_classes == 3
    G.eval(), D.eval()
    z = torch.randn(2, G.nz)
    with torch.no_grad():
        for model, build, inputs in ((G, build_generator, z), (D, build_critic, G(z))):
            again = build(json.loads(json.dumps(model.config))).eval()
            assert again.config == model.config
            again.load_state_dict(model.state_dict())
            torch.testing.assert_close(again(inputs), model(inputs))
    with pytest.raises(ValueError, match="projection"):
        make_models("conditional", 3, critic_bn=True)


def test_parameter_counts_at_width_64_for_6_classes():
    """Derived from METHODS B.8: the label costs the first layers' label inputs or the embeddings."""
    counts = {
        "cgan G": (CGANGenerator(6), 3_524_480 + 6 * 512 * 15),  # DCGAN G + one-hot inputs of layer 1
        "cgan D": (CGANCritic(6, bn=False), 2_762_240 + 6 * 64 * 16),  # B.2 + 6 label channels
        "masked D": (MaskedMultichannelCritic(6, bn=False), 2_762_240 + 5 * 64 * 16),  # 7 channels, not 2
        # separable G, its 480 green BN channels' affine terms replaced by 6 classes' gains and biases
        "projection G": (ProjectionGenerator(6), 2_643_840 - 2 * 480 + 6 * 2 * 480),
        # B.2 without its last conv (512·15), then ψ (512 + bias) and the 6 x 512 embedding
        "projection D": (ProjectionCritic(6), 2_762_240 - 512 * 15 + 513 + 6 * 512),
    }
    for name, (model, expected) in counts.items():
        assert count_parameters(model) == expected, name


# -- the synthetic classes --------------------------------------------------------------------
def test_synthetic_classes_are_labelled_and_vary_only_the_green():
    classes = synthetic_classes()
    assert len({c.name for c in classes}) == 41 and {c.base for c in classes} == set(PROTEINS)
    assert all(c.name == f"synthetic-{i:02d} ({c.base} variant)" for i, c in enumerate(classes))
    assert synthetic_classes(5) == classes[:5]  # a class does not depend on how many are made
    stack = synthetic_stack(1, n_classes=3, seed=2)
    assert stack.simulated and stack.description.startswith("SYNTHETIC classes, not real proteins")
    assert stack.class_names == [c.name for c in classes[:3]] == sorted(stack.class_names)
    assert list(stack.truth["base_protein"]) == [c.base for c in classes[:3]]
    for cls in classes[:8]:  # the base protein's cell, same red, another green
        base, _ = render_cell(cls.base, np.random.default_rng(5), phase=0.9)
        variant, _ = render_cell(cls.base, np.random.default_rng(5), phase=0.9, pattern=cls.pattern)
        assert np.array_equal(base[0], variant[0]) and not np.array_equal(base[1], variant[1]), cls.name
