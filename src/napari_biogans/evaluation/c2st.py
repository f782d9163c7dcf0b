"""Classifier two-sample test (C2ST) as in Osokin et al. (METHODS D.1), critics in memory-sized groups.

A C2ST trains a fresh DCGAN critic to tell set A (real cells) from set B (generated cells, or
the real cells of another protein) on one half of the data and scores it on the other half.
The score is minus the critic's objective: near 0 (often slightly negative) when the sets are
indistinguishable, larger when they differ.

Every split, protein and protein pair needs a critic of its own: 10 for one protein, 64 per
split for the 8 × 8 real-vs-real table, 1,681 per split for the LIN data's 41 proteins. They
train in **groups** whose size :func:`plan_critics` derives from a memory budget before
starting: :class:`GroupedCritic` holds one group of independent critics, run as grouped
convolutions (one pass for the group: the fast path on a GPU) or as a loop of plain
convolutions over the group's critics (the fast path on a CPU, see :func:`fastest_path`).
Adam is element-wise, so one optimiser over the group is that many independent optimisers.

A critic's numbers do not depend on which group it trains in: its initial weights come from
its own seed, and every random draw of a step (which cells, flips, the gradient penalty's
mixing weights) is made for *all* critics from a generator seeded by the step, then the group
takes its own columns. Grouped 1 or 64 at a time, the same seed gives the same scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..jobs import Job, Update, within

ALGORITHMS = {
    # name: (batch norm in the critic, optimiser, lr, betas)
    "wgan-gp": (False, "adam", 1e-4, (0.0, 0.9)),
    "wgan": (True, "rmsprop", 5e-5, None),
    "gan": (True, "adam", 2e-4, (0.5, 0.999)),
}
GP_WEIGHT = 10.0
CLIP = 0.01
PATHS = ("grouped", "loop")


def fastest_path(device) -> str:
    """A loop of plain convolutions over the critics: measured faster than grouped convolutions on a
    2-core CPU (1.06x at width 16, 1.48x at width 64) and on an H200 (1.8x, ten critics at width 64,
    batch 64), because the gradient penalty's double backward through grouped convolutions is slow on
    oneDNN and cuDNN alike (benchmarks/bench_eval.py, docs/benchmarks.md). ``path="grouped"`` remains
    for measuring the other way on new hardware."""
    torch.device(device)  # an unknown device name fails here, as it would later
    return "loop"


def _widths(image_size, width: int = 64):
    """METHODS B.2 for any (H, W): stride-2 layers doubling the width while both sides stay > 4,
    then one convolution over what is left (3 x 5 for 48 x 80) to a single score."""
    h, w = image_size
    layers = [width]
    h, w = h // 2, w // 2
    while h > 4 and w > 4:
        layers.append(layers[-1] * 2)
        h, w = h // 2, w // 2
    return layers, (h, w)


def _seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (the run's seed, a role, a critic or step number)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class GroupedCritic(nn.Module):
    """``len(seeds)`` independent DCGAN critics on ``channels``-channel images: (B, G, C, H, W) -> (B, G).

    Critic g is initialised from ``seeds[g]`` alone (METHODS B.7), so the same seed gives the
    same critic in any group. ``path`` is how the group runs: "grouped" convolutions or a "loop"
    over the critics with plain convolutions of the same weights (same outputs).
    """

    def __init__(self, seeds, image_size=(48, 80), width: int = 64, bn: bool = False, channels: int = 2,
                 path: str = "grouped"):
        super().__init__()
        if path not in PATHS:
            raise ValueError(f"unknown critic path '{path}'; one of {PATHS}")
        self.groups, self.channels, self.path = len(seeds), channels, path
        g = self.groups
        widths, head = _widths(image_size, width)
        layers, c_in = [], channels
        for i, c_out in enumerate(widths):
            layers.append(nn.Conv2d(g * c_in, g * c_out, 4, 2, 1, bias=False, groups=g))
            if bn and i > 0:
                layers.append(nn.BatchNorm2d(g * c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        layers.append(nn.Conv2d(g * c_in, g, head, 1, 0, bias=False, groups=g))
        self.net = nn.Sequential(*layers)
        with torch.no_grad():
            for k, seed in enumerate(seeds):
                rng = torch.Generator().manual_seed(int(seed))
                for m in self.net:
                    if isinstance(m, nn.Conv2d):
                        m.weight.view(g, -1)[k].normal_(0.0, 0.02, generator=rng)
                    elif isinstance(m, nn.BatchNorm2d):
                        m.weight.view(g, -1)[k].normal_(1.0, 0.02, generator=rng)
                        m.bias.view(g, -1)[k].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, g = x.shape[0], self.groups
        if self.path == "grouped":
            return self.net(x.reshape(b, g * self.channels, *x.shape[-2:])).reshape(b, g)
        # one split per parameter and forward: its backward is a single concatenation
        parts = [[t.chunk(g) if t is not None else [None] * g for t in _tensors(m)] for m in self.net]
        out = []
        for k in range(g):
            y = x[:, k]
            for m, tensors in zip(self.net, parts):
                mine = [t[k] for t in tensors]
                if isinstance(m, nn.Conv2d):
                    y = F.conv2d(y, mine[0], None, m.stride, m.padding)
                elif isinstance(m, nn.BatchNorm2d):
                    y = F.batch_norm(y, mine[2], mine[3], mine[0], mine[1], self.training, m.momentum, m.eps)
                else:
                    y = F.leaky_relu(y, 0.2, inplace=True)
            out.append(y.reshape(b))
        return torch.stack(out, 1)


def _tensors(module: nn.Module) -> list:
    if isinstance(module, nn.Conv2d):
        return [module.weight]
    if isinstance(module, nn.BatchNorm2d):
        return [module.weight, module.bias, module.running_mean, module.running_var]
    return []


def _batch_scores(critic, algorithm: str, real: torch.Tensor, fake: torch.Tensor, eps, create_graph: bool):
    """Per-critic objective (G,) on one batch: what the critic minimises (METHODS C.1 signs).
    ``eps`` (B, G): the gradient penalty's mixing weights (wgan-gp)."""
    d_real, d_fake = critic(real), critic(fake)
    if algorithm == "gan":
        bce = nn.functional.binary_cross_entropy_with_logits
        return bce(d_real, torch.ones_like(d_real), reduction="none").mean(0) + bce(
            d_fake, torch.zeros_like(d_fake), reduction="none"
        ).mean(0)
    # critic scores real low and fake high: it minimises mean D(real) - mean D(fake)
    score = d_real.mean(0) - d_fake.mean(0)
    if algorithm == "wgan-gp":
        eps = eps[:, :, None, None, None]
        mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=create_graph)
        norm = grad.flatten(2).norm(dim=2)  # per sample and critic, over C·H·W
        score = score + GP_WEIGHT * ((norm - 1) ** 2).mean(0)
    return score


# ------------------------------------------------------------------------------------------------
# Memory plan

# Live float32 copies of one batch's activations at the peak of a step, per forward's worth
# (real, fake and, for wgan-gp, the mixed batch with its double-backward graph). Measured with
# benchmarks/bench_real_vs_real.py --memory (CPU peak RSS, CUDA max_memory_allocated) and
# rounded up: see docs/benchmarks.md.
ACTIVATION_COPIES = {"wgan-gp": 8.0, "wgan": 3.0, "gan": 3.0}
STATE_COPIES = {"adam": 4, "rmsprop": 3}  # weights, gradients and the optimiser's state
CPU_FRACTION, CUDA_FRACTION = 0.5, 0.8  # of the memory available now, when no budget is given
# The loop path slows down in big groups (the group's activations leave the caches): measured CPU
# time per critic-step at width 8, batch 32: 54 ms in groups of 2-8, 65 ms at 16, 169 ms at 64.
LOOP_GROUP_CAP = 8


def critic_bytes(image_size, width: int, batch_size: int, algorithm: str = "wgan-gp", channels: int = 2) -> int:
    """Estimated peak bytes one critic adds while it trains: weights, gradients and optimiser
    state, plus the activations of one batch (computed from the layer shapes)."""
    bn, opt_name, _, _ = ALGORITHMS[algorithm]
    widths, head = _widths(image_size, width)
    h, w = image_size
    params, activations, c_in = 0, channels * h * w, channels
    for i, c_out in enumerate(widths):
        h, w = h // 2, w // 2
        params += c_in * c_out * 16 + (2 * c_out if bn and i > 0 else 0)
        activations += c_out * h * w * (2 if bn and i > 0 else 1)
        c_in = c_out
    params += c_in * head[0] * head[1]
    return int(4 * (STATE_COPIES[opt_name] * params + ACTIVATION_COPIES[algorithm] * batch_size * activations))


def memory_budget(device, memory_gb: float | None = None) -> int:
    """Bytes the critics may use: ``memory_gb`` when given, else a fraction of what is free now
    (psutil's available memory on a CPU, ``torch.cuda.mem_get_info`` on CUDA)."""
    if memory_gb is not None:
        if memory_gb <= 0:
            raise ValueError(f"the memory budget must be positive, not {memory_gb} GB")
        return int(memory_gb * 1e9)
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FRACTION)
    import psutil

    return int(psutil.virtual_memory().available * CPU_FRACTION)


@dataclass(frozen=True)
class CriticPlan:
    """How ``critics`` critics train: ``groups`` groups of at most ``group_size``, one after another."""

    critics: int
    group_size: int
    bytes_per_critic: int
    data_bytes: int  # the cells on the device, shared by every group
    budget_bytes: int
    path: str

    @property
    def groups(self) -> int:
        return -(-self.critics // self.group_size)

    @property
    def peak_bytes(self) -> int:
        return self.data_bytes + self.group_size * self.bytes_per_critic

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.budget_bytes

    def describe(self) -> str:
        groups = f"{self.groups} group" + ("s" if self.groups > 1 else "")
        fit = "" if self.fits else " — MORE than the budget: lower --batch-size or --width"
        return (f"{self.critics} critics in {groups} of {self.group_size}, ≈ {self.peak_bytes / 1e9:.1f} GB peak "
                f"(budget {self.budget_bytes / 1e9:.1f} GB, {self.path} convolutions){fit}")


def plan_critics(critics: int, image_size, width: int, batch_size: int, algorithm: str = "wgan-gp", device="cpu",
                 memory_gb: float | None = None, data_bytes: int = 0, channels: int = 2,
                 path: str | None = None) -> CriticPlan:
    """Group sizes for ``critics`` critics within the memory budget, as even as possible
    (100 critics that fit 64 at a time run as 2 groups of 50); on the loop path (CPU) at most
    ``LOOP_GROUP_CAP`` per group, which is faster there."""
    path = path or fastest_path(device)
    per_critic = critic_bytes(image_size, width, batch_size, algorithm, channels)
    budget = memory_budget(device, memory_gb)
    most = max(1, min(critics, (budget - data_bytes) // per_critic, LOOP_GROUP_CAP if path == "loop" else critics))
    groups = -(-critics // most)
    return CriticPlan(critics, -(-critics // groups), per_critic, data_bytes, budget, path)


# ------------------------------------------------------------------------------------------------
# Training


@dataclass
class C2STResult:
    scores: np.ndarray  # (G,) score per critic (= -objective on held-out data)
    losses: np.ndarray  # (steps_logged, G) training objective

    def summary(self) -> dict:
        return summarize(self.scores)


def summarize(scores) -> dict:
    """Median ± MAD (the paper's text) and mean ± population std (its tables), NaN-aware."""
    scores = np.asarray(scores, dtype=np.float64)
    median = float(np.nanmedian(scores))
    return {
        "median": median,
        "mad": float(np.nanmedian(np.abs(scores - median))),
        "mean": float(np.nanmean(scores)),
        "std": float(np.nanstd(scores)),
        "n": int(np.sum(np.isfinite(scores))),
    }


Draw = Callable[[int, torch.Generator, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def train_and_score(
    draw_train: Draw,
    draw_test: Draw,
    critics: int,
    image_size=(48, 80),
    algorithm: str = "wgan-gp",
    steps: int = 5000,
    batch_size: int = 64,
    test_batches: int = 10,
    width: int = 64,
    device="cpu",
    seed: int = 0,
    lr: float | None = None,
    channels: int = 2,
    plan: CriticPlan | None = None,
    stage: str = "C2ST critics",
) -> Job:
    """Train ``critics`` critics, group by group as ``plan`` says, and score them: a job
    (``jobs.Update`` per reported step, about 200 per group) that returns a :class:`C2STResult`.

    ``draw_train(b, rng, ids)`` / ``draw_test(...)`` return ``(a, b)`` batches of shape
    (b, len(ids), C, H, W) for the critics ``ids`` (a long tensor on the device): critic
    ``ids[g]`` trains on slot g. A draw must take its randomness from ``rng`` as if for all
    ``critics`` and keep the columns ``ids`` (:class:`Pools` does), so that a critic's data do not
    depend on its group. ``test_batches`` is how many held-out batch pairs are averaged; ``lr``
    overrides the reference learning rate (tiny test critics need a larger one). Without a
    ``plan``, all critics train in one group.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown C2ST algorithm '{algorithm}'; one of {sorted(ALGORITHMS)}")
    device = torch.device(device)
    if plan is None:
        plan = CriticPlan(critics, critics, 0, 0, 0, fastest_path(device))
    scores, losses = [], []
    for index, start in enumerate(range(0, critics, plan.group_size)):
        ids = torch.arange(start, min(critics, start + plan.group_size), device=device)
        group = yield from within(
            _train_group(draw_train, draw_test, ids, critics, image_size, algorithm, steps, batch_size, test_batches,
                         width, device, seed, lr, channels, plan.path),
            before=index * steps, total=plan.groups * steps, stage=stage)
        scores.append(group.scores)
        losses.append(group.losses)
    return C2STResult(np.concatenate(scores), np.concatenate(losses, axis=1))


def _train_group(draw_train, draw_test, ids, critics, image_size, algorithm, steps, batch_size, test_batches, width,
                 device, seed, lr, channels, path) -> Job:
    bn, opt_name, reference_lr, betas = ALGORITHMS[algorithm]
    lr = lr or reference_lr
    seeds = [_seed(seed, 0, int(k)) for k in ids.tolist()]
    critic = GroupedCritic(seeds, image_size, width, bn=bn, channels=channels, path=path).to(device)
    if opt_name == "adam":
        opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=betas)
    else:
        opt = torch.optim.RMSprop(critic.parameters(), lr=lr)
    rng = torch.Generator(device)

    def objective(draw, step: int, create_graph: bool):
        rng.manual_seed(_seed(seed, 1, step))  # the step's draws, for all critics
        a, b = draw(batch_size, rng, ids)
        eps = torch.rand(batch_size, critics, device=device, generator=rng)[:, ids]
        return _batch_scores(critic, algorithm, a, b, eps, create_graph)

    logged = []
    report_every = max(1, steps // 200)
    critic.train()
    for step in range(steps):
        loss = objective(draw_train, step, create_graph=True)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # critics are independent: the sum gives each its own gradient
        opt.step()
        if algorithm == "wgan":
            with torch.no_grad():
                for p in critic.parameters():
                    p.clamp_(-CLIP, CLIP)
        if step % max(1, steps // 50) == 0 or step == steps - 1:
            logged.append(loss.detach().cpu().numpy())
        if step % report_every == 0 or step == steps - 1:
            yield Update(step + 1, steps)
    critic.eval()
    total = torch.zeros(len(ids), device=device)
    for t in range(test_batches):
        total += objective(draw_test, steps + t, create_graph=False).detach()
    return C2STResult(scores=(-(total / test_batches)).cpu().numpy(), losses=np.stack(logged))


class Pools:
    """Random batches for the critics from index pools into one uint8 stack, on the device:
    (b, len(ids), 2, H, W) in [-1, 1].

    ``pools[k]`` lists the cells critic k may draw; flips are random per sample and critic (the
    reference kept its random flips on for test data too). Every call draws for all critics and
    keeps the columns ``ids``, so a critic's cells do not depend on its group.
    """

    def __init__(self, images, pools: list[np.ndarray], device):
        if any(len(p) == 0 for p in pools):
            raise ValueError("a C2ST group has no cells; every class needs at least 2 test cells")
        self.images = images if torch.is_tensor(images) else torch.as_tensor(images, device=device)
        longest = max(len(p) for p in pools)
        padded = np.stack([np.resize(p, longest) for p in pools])
        self.pools = torch.as_tensor(padded, device=device)
        self.lengths = torch.as_tensor([len(p) for p in pools], device=device)

    def __call__(self, b: int, rng: torch.Generator, ids: torch.Tensor) -> torch.Tensor:
        u = torch.rand(b, len(self.lengths), device=self.lengths.device, generator=rng)[:, ids]
        pick = (u * self.lengths[ids]).long()
        cells = self.pools[ids[None], pick]
        x = self.images[cells].float() / 127.5 - 1.0
        return random_flips(x, rng, len(self.lengths), ids)


def random_flips(x: torch.Tensor, generator: torch.Generator, critics: int | None = None, ids=None) -> torch.Tensor:
    """Random horizontal and vertical flips per sample and slot of (b, G, ...); with ``critics``
    and ``ids``, drawn for all ``critics`` slots and kept for ``ids``."""
    shape = (x.shape[0], critics or x.shape[1]) + (1,) * (x.ndim - 2)
    h = torch.rand(shape, device=x.device, generator=generator) < 0.5
    v = torch.rand(shape, device=x.device, generator=generator) < 0.5
    if ids is not None:
        h, v = h[:, ids], v[:, ids]
    x = torch.where(h, x.flip(-1), x)
    return torch.where(v, x.flip(-2), x)


# ------------------------------------------------------------------------------------------------
# The two uses


def generator_c2st(
    generator, test_stack, class_names: list[str], n_splits: int = 10, device="cpu", seed: int = 0,
    memory_gb: float | None = None, **kwargs
) -> Job:
    """C2ST of a generator against held-out real cells, one critic per split and protein (a job).

    ``class_names`` are the generator's classes in output order; ``test_stack`` must hold them
    all. Real cells come from the stack's C2ST splits (role "train" to train, "test" to score);
    fakes are fresh samples of the frozen generator in eval mode. Critics train in groups that
    fit ``memory_gb`` (default: a share of the free memory). Returns per-protein score arrays
    (n_splits,) and their summaries, plus the summary over all proteins (mean of the per-protein
    scores of each split, as the paper's "all" row).
    """
    from ..data.lin import c2st_splits

    device = torch.device(device)
    stack = test_stack.select_classes(class_names) if class_names != ["any protein"] else test_stack
    splits = c2st_splits(stack, n_splits)
    n_classes = generator.n_classes
    images = torch.as_tensor(stack.images, device=device)

    def pools(role):
        out = []
        for split in splits:  # critic s * n_classes + c: split s, protein c
            members = split[role]
            for c in range(n_classes):
                out.append(members if n_classes == 1 else members[stack.class_index[members] == c])
        return Pools(images, out, device)

    real_train, real_test = pools("train"), pools("test")
    generator = generator.to(device).eval()

    def fakes(b, rng, ids):
        z = torch.randn(b, n_splits, generator.nz, device=device, generator=rng)
        needed = torch.unique(ids // n_classes)  # only the group's splits go through the generator
        with torch.no_grad():
            x = generator(z[:, needed].reshape(-1, generator.nz)).float()
        x = x.reshape(b, len(needed), n_classes, *x.shape[-3:])
        return x[:, torch.searchsorted(needed, ids // n_classes), ids % n_classes]

    critics = n_splits * n_classes
    plan = plan_critics(critics, stack.image_size, kwargs.get("width", 64), kwargs.get("batch_size", 64),
                        kwargs.get("algorithm", "wgan-gp"), device, memory_gb, data_bytes=stack.images.nbytes)
    result = yield from train_and_score(
        lambda b, rng, ids: (real_train(b, rng, ids), fakes(b, rng, ids)),
        lambda b, rng, ids: (real_test(b, rng, ids), fakes(b, rng, ids)),
        critics, image_size=stack.image_size, device=device, seed=seed, plan=plan, **kwargs,
    )
    scores = result.scores.reshape(n_splits, n_classes)
    names = class_names if n_classes > 1 else ["all"]
    report = {name: {"scores": scores[:, c].tolist(), **summarize(scores[:, c])} for c, name in enumerate(names)}
    report["all"] = {"scores": scores.mean(1).tolist(), **summarize(scores.mean(1))}
    return report


def real_vs_real_plan(train_stack, test_stack, n_classes: int, n_splits: int = 10, device="cpu",
                      memory_gb: float | None = None, width: int = 64, batch_size: int = 64,
                      algorithm: str = "wgan-gp") -> CriticPlan:
    """The groups :func:`real_vs_real` will train its ``n_splits`` × ``n_classes``² critics in."""
    data = train_stack.images.nbytes + test_stack.images.nbytes
    return plan_critics(n_splits * n_classes**2, test_stack.image_size, width, batch_size, algorithm, device,
                        memory_gb, data_bytes=data)


def real_vs_real(
    train_stack, test_stack, class_names: list[str], n_splits: int = 10, device="cpu", seed: int = 0,
    memory_gb: float | None = None, plan: CriticPlan | None = None, **kwargs
) -> Job:
    """The paper's Table 1 as a job: score matrix (A = row from the train set, B = column from the test set).

    Critic (s, a, b) trains on A's train-role cells against B's train-role cells of split s, and
    is scored on their test roles. Returns scores of shape (n_splits, C, C). Critics train in
    the groups of ``plan`` (default: :func:`real_vs_real_plan` for ``memory_gb``); progress
    counts critic steps over all groups.
    """
    from ..data.lin import c2st_splits

    device = torch.device(device)
    a_stack, b_stack = train_stack.select_classes(class_names), test_stack.select_classes(class_names)
    a_splits, b_splits = c2st_splits(a_stack, n_splits), c2st_splits(b_stack, n_splits)
    c = len(class_names)
    if plan is None:
        plan = real_vs_real_plan(a_stack, b_stack, c, n_splits, device, memory_gb, kwargs.get("width", 64),
                                 kwargs.get("batch_size", 64), kwargs.get("algorithm", "wgan-gp"))
    pairs = [(s, i, j) for s in range(n_splits) for i in range(c) for j in range(c)]  # critic k is pairs[k]
    both = torch.as_tensor(np.concatenate([a_stack.images, b_stack.images]), device=device)
    offset = len(a_stack)

    def members(stack, split, role, label, shift=0):
        idx = split[role]
        return idx[stack.class_index[idx] == label] + shift

    def pools(role, side):
        if side == "a":
            return Pools(both, [members(a_stack, a_splits[s], role, i) for s, i, _ in pairs], device)
        return Pools(both, [members(b_stack, b_splits[s], role, j, offset) for s, _, j in pairs], device)

    a_train, b_train, a_test, b_test = pools("train", "a"), pools("train", "b"), pools("test", "a"), pools("test", "b")
    result = yield from train_and_score(
        lambda b, rng, ids: (a_train(b, rng, ids), b_train(b, rng, ids)),
        lambda b, rng, ids: (a_test(b, rng, ids), b_test(b, rng, ids)),
        len(pairs), image_size=a_stack.image_size, device=device, seed=seed, plan=plan, stage="critic pairs", **kwargs,
    )
    return result.scores.reshape(n_splits, c, c)
