"""What a training run will cost before it starts: seconds per iteration and the size on disk.

Time (fluorescence models): the forward FLOPs of generator and critic for the chosen model,
width and batch are counted exactly on torch's ``meta`` device (no memory, no compute); the
device's speed is measured by timing the critic's forward on a small batch on the chosen device
(a fraction of a second). An iteration is then taken as ``n_critic`` critic steps of
``G + 6·D`` forward-equivalents (real and fake through the critic and back; backward ≈ twice a
forward), plus ``6·D`` for the gradient penalty (wgan-gp: one more pass through the critic and a
double backward), and one generator step of ``3·(G + D)``. It is an estimate ("about"), good to
a factor of about two; a run's real speed is in its ``losses.csv``.

Size: the train state holds every model's weights and Adam's two moments (12 bytes per
parameter), plus the EM trainers' history pools (float16 fakes); the model file holds the
generator(s) in float32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

WIDE = 48  # widths from here on are impractical on a CPU (the paper's 64 ran 15 s per iteration on 2 cores)
PAPER_ITERATIONS = 50_000
CHEAPER = {"width": 16, "batch_size": 16}
CPU_LR = 1e-3  # the CPU sweep's fastest learner at width 16 (docs/evaluation.md; the reference 1e-4 was 100× slower)


@dataclass(frozen=True)
class Estimate:
    seconds_per_iteration: float | None  # None: not estimated
    state_bytes: int
    model_bytes: int
    device: str

    def describe(self, iterations: int) -> str:
        """One line: speed and total time (when estimated) and the sizes on disk."""
        size = f"training state ≈ {_size(self.state_bytes)}, model file ≈ {_size(self.model_bytes)}"
        if self.seconds_per_iteration is None:
            return size
        return (f"about {_duration(self.seconds_per_iteration)} per iteration on {self.device}: {iterations:,} "
                f"iterations ≈ {_duration(self.seconds_per_iteration * iterations)}; {size}")


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _duration(seconds: float) -> str:
    for unit, length in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * length:
            return f"{seconds / length:.1f} {unit}"
    return f"{seconds:.2g} s"


def _parameters(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _forward_flops(module, *inputs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops()


def fluorescence(config, n_classes: int, image_size, measure: bool = True) -> Estimate:
    """The cost of a :class:`~napari_biogans.training.trainer.TrainConfig` run on ``n_classes`` proteins
    (1 for the pooled models) of ``image_size`` cells; ``measure=False``: sizes only."""
    from ..devices import describe_device, resolve_device
    from ..models import make_models
    from .objectives import get_objective

    objective = get_objective(config.objective)
    with torch.device("meta"):
        G, D = make_models(config.arch, n_classes=n_classes, image_size=image_size, width=config.width,
                           nz=config.nz, critic_bn=objective.critic_bn, spectral_norm=config.spectral_norm)
    params_g, params_d = _parameters(G), _parameters(D)
    state, model = 12 * (params_g + params_d), 4 * params_g
    device = resolve_device(config.device)
    if not measure:
        return Estimate(None, state, model, describe_device(device))
    batch = config.batch_size
    z = torch.zeros(batch, G.nz, device="meta")
    g_flops = _forward_flops(G, z)
    with torch.no_grad():
        cells = torch.zeros(G(z).shape, device="meta")
    d_flops = _forward_flops(D, cells)
    critic_step = g_flops + (12 if objective.gp_weight else 6) * d_flops
    iteration = objective.n_critic * critic_step + 3 * (g_flops + d_flops)
    seconds = iteration / _flops_per_second(config, n_classes, image_size, device, objective)
    return Estimate(seconds, state, model, describe_device(device))


def _flops_per_second(config, n_classes, image_size, device, objective) -> float:
    """This device's speed on this critic: a small batch's forward, timed after a warm-up."""
    from ..models import make_models

    options = dict(n_classes=n_classes, image_size=image_size, width=config.width, nz=config.nz,
                   critic_bn=objective.critic_bn, spectral_norm=config.spectral_norm)
    with torch.device("meta"):
        G, D = make_models(config.arch, **options)
    probe = 64 if device.type == "cuda" else 4
    with torch.no_grad():
        shape = (probe, *G(torch.zeros(1, G.nz, device="meta")).shape[1:])
    flops = _forward_flops(D, torch.zeros(shape, device="meta"))
    critic = make_models(config.arch, **options)[1].to(device).eval()
    cells = torch.zeros(shape, device=device)
    with torch.no_grad():
        critic(cells)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0, runs = time.perf_counter(), 0
        while runs < 3 or time.perf_counter() - t0 < 0.2:
            critic(cells)
            runs += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return flops * runs / (time.perf_counter() - t0)


def em(config) -> Estimate:
    """The sizes of an :class:`~napari_biogans.training.em_trainer.EMTrainConfig` run (time: not estimated)."""
    from ..devices import describe_device, resolve_device
    from ..models.em import (CascadeGenerator, ConditionalLabelGenerator, JointGenerator, LabelGenerator,
                             MultiScaleDiscriminator, UNet)
    from .em_trainer import IMAGE_PYRAMIDS, LABEL_PYRAMIDS

    mode = config.mode
    with torch.device("meta"):
        if mode == "conditional":
            label_generator = ConditionalLabelGenerator(width=config.label_width, n_blocks=config.image_blocks)
        else:
            label_generator = (JointGenerator if mode == "joint" else LabelGenerator)(config.label_width,
                                                                                     config.label_layers)
        models = [label_generator, MultiScaleDiscriminator(3 if mode == "joint" else 2, config.label_d_width,
                                                           config.label_pyramid or LABEL_PYRAMIDS[mode])]
        if mode in ("sgan", "dsgan"):
            models += [CascadeGenerator(width=config.image_width, n_blocks=config.image_blocks),
                       MultiScaleDiscriminator(3, config.image_d_width, config.image_pyramid or IMAGE_PYRAMIDS[mode])]
        if mode == "dsgan":
            models.append(UNet(1, 2, config.reconstructor_width, config.reconstructor_depth))
    side = config.crop // config.label_downsample if mode == "dsgan" else (config.label_crop or config.crop)
    label_pool = config.pool_size * (3 if mode == "joint" else 2) * side**2 * 2
    image_pool = config.pool_size * 3 * config.crop**2 * 2 if mode in ("sgan", "dsgan") else 0
    generators = _parameters(models[0]) + (_parameters(models[2]) if len(models) > 2 else 0)
    return Estimate(None, 12 * _parameters(*models) + label_pool + image_pool, 4 * generators,
                    describe_device(resolve_device(config.device)))


def advice(config, n_classes: int, image_size, estimate: Estimate) -> str | None:
    """The cheaper setting to try, when ``config`` is impractical on a CPU (None otherwise)."""
    width = getattr(config, "width", None) or getattr(config, "image_width", 0)
    from ..devices import resolve_device

    if resolve_device(config.device).type != "cpu" or width < WIDE:
        return None
    if not hasattr(config, "arch"):  # EM: no time estimate, only the cheaper widths
        return (f"EM models at width {width} train very slowly on a CPU; try --image-width 16 --label-width 8 "
                f"--crop 128, or a GPU")
    cheaper = fluorescence(replace(config, **CHEAPER), n_classes, image_size)
    paper = (f"the paper's {PAPER_ITERATIONS:,} iterations ≈ {_duration(estimate.seconds_per_iteration * PAPER_ITERATIONS)}"
             if estimate.seconds_per_iteration else "")
    return (f"width {width} is slow on a CPU{': ' + paper if paper else ''}; try --width {CHEAPER['width']} "
            f"--batch-size {CHEAPER['batch_size']} --lr {CPU_LR:g} (≈ {_duration(cheaper.seconds_per_iteration)} per iteration, "
            f"training state ≈ {_size(cheaper.state_bytes)}), or a GPU")
