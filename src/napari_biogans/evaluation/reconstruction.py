"""Reconstruction of real cells by optimising the latent code (Osokin et al., METHODS D.2).

For every real cell, find z minimising the pixel-normalised squared error between G(z) and
the cell, with L-BFGS from several random starts, and keep the best start. Reported per cell:
the L2 error (RMSE over both channels in [0, 1]), the negative log-likelihood of the found z
under the N(0, I) prior, and the nearest-neighbour baseline (the closest training cell of the
same protein, by the same L2).

Each cell is rendered through its own protein only (``generator.generate``: a star generator
runs the shared red tower once per row and each protein's green tower on that protein's rows),
never through every protein's tower. All cells and all restarts are optimised as one batch by
:func:`batched_lbfgs`, an L-BFGS whose history, curvature scaling and step are kept per row, so
each cell follows exactly the path it would follow alone: no cross-talk (torch's L-BFGS over a
summed loss would mix cells through its shared dot products). Steps follow torch's L-BFGS without
line search: the first iteration moves ``lr · min(1, 1/|g|₁)``, later ones ``lr``, history 100;
"50 iterations" are 50 ``step`` calls of up to 20 inner iterations each (METHODS I.6), so 1000
inner iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..jobs import Job, Update, within


def batched_lbfgs(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    free: torch.Tensor | None = None,
    lr: float = 0.05,
    iterations: int = 1000,
    history: int = 100,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
) -> Job:
    """Minimise ``loss_fn(z) -> (B,)`` row by row, rows never influencing each other: a job that
    reports every 20 iterations and returns the found ``z``.

    ``free`` (D,) bool marks the dimensions to optimise (the others stay at ``z0``). A row stops
    once its gradient or its step falls under the tolerances (torch's stopping rules).
    """
    z = z0.detach().clone()
    b, d = z.shape
    mask = torch.ones(d, dtype=z.dtype, device=z.device) if free is None else free.to(z.dtype)
    s_hist = torch.zeros(b, history, d, dtype=z.dtype, device=z.device)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(b, history, dtype=z.dtype, device=z.device)
    count = torch.zeros(b, dtype=torch.long, device=z.device)
    head = torch.zeros(b, dtype=torch.long, device=z.device)  # next slot to write, per row
    active = torch.ones(b, dtype=torch.bool, device=z.device)
    rows = torch.arange(b, device=z.device)
    g_prev = step = loss_prev = None

    def grad_at(z):
        z = z.detach().requires_grad_(True)
        loss = loss_fn(z)
        (g,) = torch.autograd.grad(loss.sum(), z)
        return loss.detach(), g * mask

    loss, g = grad_at(z)
    for it in range(iterations):
        active &= g.abs().amax(1) > tolerance_grad
        if not active.any():
            yield Update(iterations, iterations, "L-BFGS")  # every row has converged: the job is done
            break
        if it == 0:
            direction, h_diag = -g, torch.ones(b, 1, dtype=z.dtype, device=z.device)
            t = lr * torch.clamp(1.0 / g.abs().sum(1, keepdim=True).clamp_min(1e-30), max=1.0)
        else:
            y, s = g - g_prev, step
            ys = (y * s).sum(1)
            push = active & (ys > 1e-10)
            slot = head
            s_hist[rows[push], slot[push]] = s[push]
            y_hist[rows[push], slot[push]] = y[push]
            rho[rows[push], slot[push]] = 1.0 / ys[push]
            head = torch.where(push, (head + 1) % history, head)
            count = torch.where(push, (count + 1).clamp(max=history), count)
            h_diag = torch.where(
                push[:, None], (ys / (y * y).sum(1).clamp_min(1e-30))[:, None], h_diag
            )
            # two-loop recursion, newest to oldest, each row over its own history
            q = -g
            alphas = []
            for k in range(int(count.max())):
                idx = (head - 1 - k) % history
                valid = (k < count).to(z.dtype)[:, None]
                s_k, y_k, rho_k = s_hist[rows, idx], y_hist[rows, idx], rho[rows, idx][:, None]
                alpha = rho_k * (s_k * q).sum(1, keepdim=True) * valid
                q = q - alpha * y_k
                alphas.append((idx, alpha, valid))
            r = q * h_diag
            for idx, alpha, valid in reversed(alphas):
                s_k, y_k, rho_k = s_hist[rows, idx], y_hist[rows, idx], rho[rows, idx][:, None]
                beta = rho_k * (y_k * r).sum(1, keepdim=True) * valid
                r = r + s_k * (alpha - beta)
            direction = r
            t = torch.full((b, 1), lr, dtype=z.dtype, device=z.device)
        step = torch.where(active[:, None], direction * t * mask, torch.zeros_like(direction))
        z = z + step
        g_prev, loss_prev = g, loss
        loss, g = grad_at(z)
        small_step = step.abs().amax(1) <= tolerance_change
        flat = (loss - loss_prev).abs() < tolerance_change
        active &= ~(small_step | flat)
        if it % 20 == 0 or it == iterations - 1:
            yield Update(it + 1, iterations, "L-BFGS")
    return z.detach()


def nll(z: np.ndarray) -> np.ndarray:
    """−log N(z; 0, I) per row: ½‖z‖² + (D/2)·ln 2π (≈ 142 ± 7 for D = 100 under the prior)."""
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (z**2).sum(-1) + 0.5 * z.shape[-1] * math.log(2 * math.pi)


def l2_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMSE over both channels in [0, 1] scale for [-1, 1] inputs (..., 2, H, W)."""
    diff = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) * 0.5
    return np.sqrt((diff**2).reshape(*diff.shape[:-3], -1).mean(-1))


def nearest_neighbour_l2(queries: np.ndarray, pool: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For uint8 cells (N, 2, H, W), the L2 (as :func:`l2_error`) to and index of the closest pool cell."""
    q = torch.as_tensor(queries).flatten(1).double() / 255.0
    p = torch.as_tensor(pool).flatten(1).double() / 255.0
    p_sq = (p * p).sum(1)
    best, where = [], []
    for start in range(0, len(q), chunk):
        block = q[start : start + chunk]
        dist = (block * block).sum(1, keepdim=True) - 2 * block @ p.T + p_sq[None]
        value, index = dist.min(1)
        best.append(torch.sqrt(value.clamp_min(0) / q.shape[1]))
        where.append(index)
    return torch.cat(best).numpy(), torch.cat(where).numpy()


@dataclass
class Reconstruction:
    z: np.ndarray  # (N, nz) best code per cell
    images: np.ndarray  # (N, 2, H, W) in [-1, 1]: G(z) for the cell's protein
    l2: np.ndarray  # (N,)
    nll: np.ndarray  # (N,)
    nll_start: np.ndarray  # (N,) NLL of the best restart's starting code


def reconstruct(
    generator,
    cells: np.ndarray,
    class_slot: np.ndarray,
    mode: str = "regular",
    restarts: int = 5,
    steps: int = 50,
    inner: int = 20,
    lr: float = 0.05,
    seed: int = 0,
    device="cpu",
) -> Job:
    """Reconstruct cells (N, 2, H, W) in [-1, 1], a job returning a :class:`Reconstruction`;
    ``class_slot[i]`` is the generator output slot of cell i.

    ``mode`` "regular" optimises all of z on both channels; "separable" optimises the red code
    on the red channel (green code held at its start), then the green code on the green channel
    (red held), each phase with a fresh L-BFGS, as the reference did.
    """
    if mode not in ("regular", "separable"):
        raise ValueError(f"mode must be 'regular' or 'separable', got {mode!r}")
    if mode == "separable" and not generator.nz_red:
        raise ValueError("separable reconstruction needs a generator with a red/green latent split")
    generator = generator.to(device).eval()  # BN running statistics: rows stay independent
    n = len(cells)
    target = torch.as_tensor(np.asarray(cells, np.float32), device=device).repeat(restarts, 1, 1, 1)
    slot = torch.as_tensor(np.asarray(class_slot), device=device).repeat(restarts)
    gen = torch.Generator(device).manual_seed(seed)
    z0 = torch.randn(n * restarts, generator.nz, generator=gen, device=device)
    # optimise the rows grouped by protein, so each tower reads one block (rows never interact:
    # the order changes no result); ``restore`` puts them back as cells x restarts
    by_protein = torch.argsort(slot, stable=True)
    restore = torch.argsort(by_protein)
    target, labels = target[by_protein], slot[by_protein, None]

    def render(z):  # (B, 2, H, W): each row through its own protein's tower only
        return generator.generate(z, labels)[:, 0]

    def channel_loss(channels):
        return lambda z: ((render(z) - target)[:, channels] ** 2).flatten(1).mean(1)

    for p in generator.parameters():
        p.requires_grad_(False)
    iterations = steps * inner
    start = z0[by_protein]
    if mode == "regular":
        z = yield from batched_lbfgs(channel_loss([0, 1]), start, lr=lr, iterations=iterations)
    else:
        red = torch.zeros(generator.nz, dtype=torch.bool, device=device)
        red[: generator.nz_red] = True
        z = yield from within(batched_lbfgs(channel_loss([0]), start, free=red, lr=lr, iterations=iterations),
                              0, 2 * iterations, "L-BFGS, red code")
        z = yield from within(batched_lbfgs(channel_loss([1]), z, free=~red, lr=lr, iterations=iterations),
                              iterations, 2 * iterations, "L-BFGS, green code")
    with torch.no_grad():
        images = render(z)[restore].float().cpu().numpy()
    z = z[restore]
    errors = l2_error(images, target[restore].cpu().numpy()).reshape(restarts, n)
    best = errors.argmin(0)
    pick = best * n + np.arange(n)
    z_np = z.cpu().numpy()
    return Reconstruction(
        z=z_np[pick], images=images[pick], l2=errors[best, np.arange(n)], nll=nll(z_np[pick]),
        nll_start=nll(z0.cpu().numpy()[pick]),
    )


def median_mad(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    median = float(np.median(values))
    return median, float(np.median(np.abs(values - median)))
