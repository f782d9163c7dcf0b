"""Classifier two-sample test (C2ST) as in Osokin et al. (METHODS D.1), with all critics in one pass.

A C2ST trains a fresh DCGAN critic to tell set A (real cells) from set B (generated cells, or
the real cells of another protein) on one half of the data and scores it on the other half.
The score is minus the critic's objective: near 0 (often slightly negative) when the sets are
indistinguishable, larger when they differ.

The ten splits, and for multi-protein models every protein, need one critic each. They are
trained **together**: :class:`GroupedCritic` holds G independent DCGAN critics as grouped
convolutions, so one forward and backward pass serves them all and no critic sees another's
data. Adam is element-wise, so one optimiser over the group is G independent optimisers.
:func:`GroupedCritic.from_critics` builds the group from separate critics, which is how the
tests show that batched and sequential runs give the same scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..jobs import Job, Update, within

ALGORITHMS = {
    # name: (batch norm in the critic, optimiser, lr, betas)
    "wgan-gp": (False, "adam", 1e-4, (0.0, 0.9)),
    "wgan": (True, "rmsprop", 5e-5, None),
    "gan": (True, "adam", 2e-4, (0.5, 0.999)),
}
GP_WEIGHT = 10.0
CLIP = 0.01


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


class GroupedCritic(nn.Module):
    """``groups`` independent DCGAN critics on 2-channel images: (B, groups, 2, H, W) -> (B, groups)."""

    def __init__(self, groups: int, image_size=(48, 80), width: int = 64, bn: bool = False, channels: int = 2):
        super().__init__()
        self.groups, self.channels = groups, channels
        widths, head = _widths(image_size, width)
        layers, c_in = [], channels
        for i, c_out in enumerate(widths):
            layers.append(nn.Conv2d(groups * c_in, groups * c_out, 4, 2, 1, bias=False, groups=groups))
            if bn and i > 0:
                layers.append(nn.BatchNorm2d(groups * c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        layers.append(nn.Conv2d(groups * c_in, groups, head, 1, 0, bias=False, groups=groups))
        self.net = nn.Sequential(*layers)
        for m in self.modules():  # METHODS B.7
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        return self.net(x.reshape(b, self.groups * self.channels, *x.shape[-2:])).reshape(b, self.groups)

    @classmethod
    def from_critics(cls, critics: list["GroupedCritic"]) -> "GroupedCritic":
        """Stack single critics (groups = 1 each) into one group with the same weights."""
        first = critics[0]
        group = cls.__new__(cls)
        nn.Module.__init__(group)
        group.groups, group.channels = len(critics), first.channels
        layers = []
        for layer_idx, module in enumerate(first.net):
            if isinstance(module, nn.Conv2d):
                conv = nn.Conv2d(
                    module.in_channels * len(critics), module.out_channels * len(critics), module.kernel_size,
                    module.stride, module.padding, bias=False, groups=len(critics),
                )
                conv.weight.data = torch.cat([c.net[layer_idx].weight.data for c in critics])
                layers.append(conv)
            elif isinstance(module, nn.BatchNorm2d):
                norm = nn.BatchNorm2d(module.num_features * len(critics))
                norm.weight.data = torch.cat([c.net[layer_idx].weight.data for c in critics])
                norm.bias.data = torch.cat([c.net[layer_idx].bias.data for c in critics])
                layers.append(norm)
            else:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
        group.net = nn.Sequential(*layers)
        return group


def _batch_scores(critic, algorithm: str, real: torch.Tensor, fake: torch.Tensor, create_graph: bool):
    """Per-critic objective (G,) on one batch: what the critic minimises (METHODS C.1 signs)."""
    d_real, d_fake = critic(real), critic(fake)
    if algorithm == "gan":
        bce = nn.functional.binary_cross_entropy_with_logits
        return bce(d_real, torch.ones_like(d_real), reduction="none").mean(0) + bce(
            d_fake, torch.zeros_like(d_fake), reduction="none"
        ).mean(0)
    # critic scores real low and fake high: it minimises mean D(real) - mean D(fake)
    score = d_real.mean(0) - d_fake.mean(0)
    if algorithm == "wgan-gp":
        eps = torch.rand(real.shape[0], real.shape[1], 1, 1, 1, device=real.device)
        mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=create_graph)
        norm = grad.flatten(2).norm(dim=2)  # per sample and critic, over 2·H·W
        score = score + GP_WEIGHT * ((norm - 1) ** 2).mean(0)
    return score


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


def train_and_score(
    draw_train: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    draw_test: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    groups: int,
    image_size=(48, 80),
    algorithm: str = "wgan-gp",
    steps: int = 5000,
    batch_size: int = 64,
    test_batches: int = 10,
    width: int = 64,
    device="cpu",
    seed: int = 0,
    critic: GroupedCritic | None = None,
    lr: float | None = None,
) -> Job:
    """Train ``groups`` critics together and score them: a job (``jobs.Update`` per reported
    step, about 200 in all) that returns a :class:`C2STResult`.

    ``draw_train(b)`` / ``draw_test(b)`` return ``(a, b)`` batches of shape (b, groups, 2, H, W):
    critic g trains on slot g of each. ``test_batches`` is how many held-out batch pairs are
    averaged (the reference made 5 passes over the test role; callers pass that number).
    ``lr`` overrides the reference learning rate (tiny test critics need a larger one).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown C2ST algorithm '{algorithm}'; one of {sorted(ALGORITHMS)}")
    bn, opt_name, reference_lr, betas = ALGORITHMS[algorithm]
    lr = lr or reference_lr
    torch.manual_seed(seed)
    critic = (critic or GroupedCritic(groups, image_size, width, bn=bn)).to(device)
    if opt_name == "adam":
        opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=betas)
    else:
        opt = torch.optim.RMSprop(critic.parameters(), lr=lr)
    logged = []
    report_every = max(1, steps // 200)
    critic.train()
    for step in range(steps):
        a, b = draw_train(batch_size)
        objective = _batch_scores(critic, algorithm, a, b, create_graph=True)
        opt.zero_grad(set_to_none=True)
        objective.sum().backward()  # critics are independent: the sum gives each its own gradient
        opt.step()
        if algorithm == "wgan":
            with torch.no_grad():
                for p in critic.parameters():
                    p.clamp_(-CLIP, CLIP)
        if step % max(1, steps // 50) == 0 or step == steps - 1:
            logged.append(objective.detach().cpu().numpy())
        if step % report_every == 0 or step == steps - 1:
            yield Update(step + 1, steps, "C2ST critics")
    critic.eval()
    total = torch.zeros(groups, device=device)
    for _ in range(test_batches):
        a, b = draw_test(batch_size)
        total += _batch_scores(critic, algorithm, a, b, create_graph=False).detach()
    scores = -(total / test_batches)
    return C2STResult(scores=scores.cpu().numpy(), losses=np.stack(logged))


class Pools:
    """Random batches from G index pools into one uint8 stack, on the device: (b, G, 2, H, W) in [-1, 1].

    ``pools[g]`` lists the cells critic g may draw; flips are random per sample and critic (the
    reference kept its random flips on for test data too).
    """

    def __init__(self, images: np.ndarray, pools: list[np.ndarray], device, generator: torch.Generator):
        if any(len(p) == 0 for p in pools):
            raise ValueError("a C2ST group has no cells; every class needs at least 2 test cells")
        self.images = torch.as_tensor(images, device=device)
        longest = max(len(p) for p in pools)
        padded = np.stack([np.resize(p, longest) for p in pools])
        self.pools = torch.as_tensor(padded, device=device)
        self.lengths = torch.as_tensor([len(p) for p in pools], device=device)
        self.device, self.generator = device, generator

    def __call__(self, b: int) -> torch.Tensor:
        u = torch.rand(b, len(self.lengths), device=self.device, generator=self.generator)
        pick = (u * self.lengths).long()
        cells = self.pools[torch.arange(len(self.lengths), device=self.device)[None], pick]
        x = self.images[cells].float() / 127.5 - 1.0
        return random_flips(x, self.generator)


def random_flips(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    shape = x.shape[:2] + (1,) * (x.ndim - 2)
    h = torch.rand(shape, device=x.device, generator=generator) < 0.5
    v = torch.rand(shape, device=x.device, generator=generator) < 0.5
    x = torch.where(h, x.flip(-1), x)
    return torch.where(v, x.flip(-2), x)


def generator_c2st(
    generator, test_stack, class_names: list[str], n_splits: int = 10, device="cpu", seed: int = 0, **kwargs
) -> Job:
    """C2ST of a generator against held-out real cells, one critic per split and protein (a job).

    ``class_names`` are the generator's classes in output order; ``test_stack`` must hold them
    all. Real cells come from the stack's C2ST splits (role "train" to train, "test" to score);
    fakes are fresh samples of the frozen generator in eval mode. Returns per-protein score
    arrays (n_splits,) and their summaries, plus the summary over all proteins (mean of the
    per-protein scores of each split, as the paper's "all" row).
    """
    from ..data.lin import c2st_splits

    stack = test_stack.select_classes(class_names) if class_names != ["any protein"] else test_stack
    splits = c2st_splits(stack, n_splits)
    n_classes = generator.n_classes
    gen = torch.Generator(device).manual_seed(seed)

    def pools(role):
        out = []
        for split in splits:
            members = split[role]
            for c in range(n_classes):
                out.append(members if n_classes == 1 else members[stack.class_index[members] == c])
        return Pools(stack.images, out, device, gen)

    real_train, real_test = pools("train"), pools("test")
    generator = generator.to(device).eval()

    def fakes(b):
        with torch.no_grad():
            z = torch.randn(b * n_splits, generator.nz, device=device, generator=gen)
            x = generator(z).float()  # (b * S, C, 2, H, W)
        return x.reshape(b, n_splits * n_classes, 2, *x.shape[-2:])

    result = yield from train_and_score(
        lambda b: (real_train(b), fakes(b)), lambda b: (real_test(b), fakes(b)),
        groups=n_splits * n_classes, image_size=stack.image_size, device=device, seed=seed, **kwargs,
    )
    scores = result.scores.reshape(n_splits, n_classes)
    names = class_names if n_classes > 1 else ["all"]
    report = {name: {"scores": scores[:, c].tolist(), **summarize(scores[:, c])} for c, name in enumerate(names)}
    report["all"] = {"scores": scores.mean(1).tolist(), **summarize(scores.mean(1))}
    return report


def real_vs_real(
    train_stack, test_stack, class_names: list[str], n_splits: int = 10, device="cpu", seed: int = 0,
    pairs_per_pass: int = 64, **kwargs
) -> Job:
    """The paper's Table 1 as a job: score matrix (A = row from the train set, B = column from the test set).

    Critic (s, a, b) trains on A's train-role cells against B's train-role cells of split s, and
    is scored on their test roles. Returns scores of shape (n_splits, C, C). Critics train
    ``pairs_per_pass`` at a time (all of them would not fit a small GPU at full width); progress
    counts critic steps over all passes.
    """
    from ..data.lin import c2st_splits

    a_stack, b_stack = train_stack.select_classes(class_names), test_stack.select_classes(class_names)
    a_splits, b_splits = c2st_splits(a_stack, n_splits), c2st_splits(b_stack, n_splits)
    c = len(class_names)
    jobs = [(s, i, j) for s in range(n_splits) for i in range(c) for j in range(c)]
    scores = np.full((n_splits, c, c), np.nan)
    gen = torch.Generator(device).manual_seed(seed)
    both = np.concatenate([a_stack.images, b_stack.images])
    offset = len(a_stack)

    def members(stack, split, role, label, shift=0):
        idx = split[role]
        return idx[stack.class_index[idx] == label] + shift

    steps = kwargs.get("steps", 5000)
    passes = -(-len(jobs) // pairs_per_pass)
    for start in range(0, len(jobs), pairs_per_pass):
        chunk = jobs[start : start + pairs_per_pass]

        def pools(role, side):
            if side == "a":
                return Pools(both, [members(a_stack, a_splits[s], role, i) for s, i, _ in chunk], device, gen)
            return Pools(both, [members(b_stack, b_splits[s], role, j, offset) for s, _, j in chunk], device, gen)

        a_train, b_train, a_test, b_test = pools("train", "a"), pools("train", "b"), pools("test", "a"), pools("test", "b")
        result = yield from within(train_and_score(
            lambda b: (a_train(b), b_train(b)), lambda b: (a_test(b), b_test(b)), groups=len(chunk),
            image_size=a_stack.image_size, device=device, seed=seed + start, **kwargs,
        ), before=start // pairs_per_pass * steps, total=passes * steps, stage="critic pairs")
        for (s, i, j), score in zip(chunk, result.scores):
            scores[s, i, j] = score
    return scores
