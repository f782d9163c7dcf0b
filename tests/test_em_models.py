"""EM networks (METHODS F.2-F.5): published shapes and parameter counts, any-size generation,
sampling that does not depend on the batch, logits, frozen blur, rebuild from config."""

import pytest
import torch

from napari_biogans.models.architectures import EM_ARCHS, build_em_module
from napari_biogans.models.em import (
    CascadeGenerator,
    ConditionalLabelGenerator,
    JointGenerator,
    LabelGenerator,
    MultiScaleDiscriminator,
    PatchDiscriminator,
    UNet,
    gaussian_kernel,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_reference():
    assert n_params(LabelGenerator()) == 1_772_448  # F.2
    assert n_params(PatchDiscriminator(2, 32, 3)) == 693_729  # F.3
    assert n_params(PatchDiscriminator(3, 64, 3)) == 2_764_737
    assert n_params(PatchDiscriminator(3, 64, 4)) == 6_959_553
    assert n_params(CascadeGenerator()) == 782_785  # F.4
    assert abs(n_params(UNet()) - 10.46e6) < 0.01e6  # F.5


def test_label_generator_any_size_and_batch_independent_sampling():
    torch.manual_seed(0)
    g = LabelGenerator(width=4)
    z = torch.randn(3, 8, 2, 3)
    out = g(z)
    assert out.shape == (3, 2, 128, 192) and out.abs().max() <= 1
    assert g.noise_shape(128, 192) == (8, 2, 3)
    # train mode: batch statistics, so a sample depends on its batch mates
    assert not torch.allclose(g(z[:1]), out[:1], atol=1e-4)
    g.eval()  # eval: each sample normalised alone (the reference's batch-1 behaviour)
    with torch.no_grad():
        assert torch.allclose(g(z)[:1], g(z[:1]), atol=1e-5)
        alone = g.train()(z[:1])
    assert torch.allclose(g.eval()(z[:1]), alone, atol=1e-5)  # batch 1 in train mode == eval


def test_discriminator_logits_receptive_field_and_frozen_blur():
    torch.manual_seed(0)
    assert gaussian_kernel(2).shape == (5, 5) and gaussian_kernel(4).shape == (9, 9)
    assert abs(float(gaussian_kernel(4).sum()) - 1) < 1e-6
    d = MultiScaleDiscriminator(2, 8, ((3, 1, 0.5), (3, 2, 0.4), (3, 4, 0.1)))
    assert not any("blur" in name for name, _ in d.named_parameters())
    assert not any("blur" in key for key in d.state_dict())
    outs = d(torch.rand(2, 2, 256, 256) * 2 - 1)
    assert [tuple(o.shape[-2:]) for o in outs] == [(30, 30), (14, 14), (6, 6)]
    assert [d.members[k].output_side(256) for k in range(3)] == [30, 14, 6]
    assert min(float(o.detach().min()) for o in outs) < 0  # logits, no sigmoid
    for n, field in ((3, 70), (4, 142)):  # F.3's receptive fields (of the convolutions: IN is global)
        body = PatchDiscriminator(1, 4, n)
        body.net = torch.nn.Sequential(*(torch.nn.Identity() if isinstance(m, torch.nn.InstanceNorm2d) else m
                                         for m in body.net))
        x = torch.randn(1, 1, 300, 300, requires_grad=True)
        out = body(x)
        out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
        rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
        assert int(rows[-1] - rows[0] + 1) == field
    with pytest.raises(ValueError, match="larger than 64"):
        d.check_input_side(64)


def test_image_generator_sizes_and_recorded_statistics():
    torch.manual_seed(0)
    g = CascadeGenerator(width=4)
    y = torch.rand(2, 2, 128, 192) * 2 - 1
    z = torch.randn(2, 8, 2, 3)
    out = g(y, z)
    assert out.shape == (2, 1, 128, 192) and g.factor == 64
    record = []
    own = g(y[:1], z[:1], record=record)
    assert len(record) == 3 * 6 + 5 - 1  # 3 norms per block, none after the last conv, L in blocks 1..5
    assert torch.allclose(own, out[:1], atol=1e-5)
    assert torch.equal(g(y[:1], z[:1], statistics=record), own)
    # frozen statistics: a sample no longer sets its own normalisation
    assert not torch.allclose(g(y[1:], z[1:], statistics=record), out[1:], atol=1e-3)
    with pytest.raises(ValueError, match="multiple of 64"):
        g(torch.zeros(1, 2, 100, 128), torch.zeros(1, 8, 1, 2))
    small = CascadeGenerator(width=4, n_blocks=3)  # factors follow the block count (I.6)
    assert small(torch.zeros(1, 2, 40, 24), torch.randn(1, 8, 5, 3)).shape == (1, 1, 40, 24)


def test_reconstructor_logits_are_the_bce_view_of_tanh():
    torch.manual_seed(0)
    f = UNet(1, 2, width=4, depth=4).eval()
    x = torch.rand(2, 1, 64, 48) * 2 - 1
    assert f(x).shape == (2, 2, 64, 48)
    assert torch.allclose(torch.sigmoid(f.logits(x)), (f(x) + 1) / 2, atol=1e-6)
    assert sum(isinstance(m, torch.nn.Dropout) for m in UNet(depth=7).modules()) == 2  # unet_128's two


def test_joint_and_conditional_generators():
    torch.manual_seed(0)
    joint = JointGenerator(width=4)
    labels, image = JointGenerator.split(joint(torch.randn(1, 8, 1, 1)))
    assert labels.shape == (1, 2, 64, 64) and image.shape == (1, 1, 64, 64)
    cond = ConditionalLabelGenerator(width=4)
    membrane = torch.rand(1, 1, 128, 128) * 2 - 1
    a, b = cond(membrane, torch.randn(1, 8, 2, 2)), cond(membrane, torch.randn(1, 8, 2, 2))
    assert a.shape == (1, 1, 128, 128) and not torch.allclose(a, b)  # noise changes the mitochondria


@pytest.mark.parametrize("arch", sorted(EM_ARCHS))
def test_every_module_rebuilds_from_its_config(arch):
    small = {"width": 4}
    if arch == "discriminator":
        small["pyramid"] = [[3, 1, 0.5], [3, 2, 0.5]]
    module = build_em_module({"arch": arch, **small})
    again = build_em_module(module.config)
    assert again.config == module.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in module.state_dict().items()}
    with pytest.raises(ValueError, match="unknown EM module"):
        build_em_module({"arch": "nope"})
    with pytest.raises(ValueError, match="bad config"):
        build_em_module({"arch": arch, "colour": 3})
