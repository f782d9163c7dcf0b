"""GAN objectives (METHODS C.1, G): losses, critic schedule and optimisers, torch only.

``get_objective(name)`` returns a frozen :class:`Objective` for ``gan``, ``wgan``, ``wgan-gp``,
``lsgan`` or ``hinge``. Critics return scores ``(B, K)`` (K = C per-pair critics, K = 1 for the
multichannel critic); every loss term is a mean over the batch per column, averaged over
columns (METHODS B.4), which is the mean over all B·K scores. Losses come back as 0-d tensors
and stats as detached 0-d tensors: nothing here syncs with the device (no ``.item()``).

Sign conventions:

* ``wgan`` / ``wgan-gp`` keep the reference's flipped sign (METHODS C.1): the critic scores
  **real low and fake high** (it minimises mean D(real) - mean D(fake)) and the generator
  minimises mean D(fake). The C2ST (METHODS D.1) relies on this sign. The stat
  ``wasserstein`` = mean D(fake) - mean D(real) is the critic's distance estimate (>= 0 once
  it has learnt something).
* ``gan``, ``lsgan``, ``hinge`` use the usual sign: D is high on real cells.

Hyper-parameters (lr is the same for G and D, METHODS C.3):

| name | loss | critic steps | optimiser | critic BN |
|---|---|---|---|---|
| gan | BCE-with-logits, non-saturating G | 1 | Adam 2e-4, (0.5, 0.999) | yes |
| wgan | D(r) - D(f), clip all critic params to ±0.01 | 5 (100 if i < 25 or i % 500 == 0) | RMSprop 5e-5 | yes |
| wgan-gp | D(r) - D(f) + 10·GP | 5 | Adam 1e-4, (0, 0.9) | no |
| lsgan | ½(D(r)-1)² + ½D(f)² ; G ½(D(f)-1)² (a=0, b=1, c=1) | 1 | Adam 2e-4, (0.5, 0.999) | yes |
| hinge | relu(1-D(r)) + relu(1+D(f)) ; G -D(f) | 5 | Adam 2e-4, (0, 0.9) | no |

Hinge follows METHODS G (SNGAN's setting: Adam 2e-4, betas (0, 0.9), 5 critic steps). It
is meant to go with a spectrally normalised critic (``spectral_norm=True``) and no critic BN,
but it does not force spectral norm; without it the critic is only held by the hinge margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["OBJECTIVES", "Objective", "get_objective", "gradient_penalty"]


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty mean((‖∇D(x̂)‖₂ - 1)²), x̂ = ε·real + (1-ε)·fake (METHODS C.1).

    Batches are cut to the same size first. Scores are ``(B, K)``; one ε is drawn per sample
    and per score column, and the norm is taken over the inputs that column reads: for
    per-pair critics (K = C) one ε per sample and class and the norm over each pair's 2·H·W;
    for a one-column critic (the multichannel critic, or C = 1) one ε per sample and the norm
    over the whole sample (for the multichannel critic: over its 1 + C native channels, since
    it reads only pair 0's red). Built with ``create_graph=True`` so the penalty trains D.
    ``critic`` may be a ``torch.compile`` wrapper: the penalty then runs its eager module.
    """
    n = min(real.shape[0], fake.shape[0])
    real, fake = real[:n].detach(), fake[:n].detach()
    k = getattr(critic, "n_scores", real.shape[1] if real.dim() == 5 else 1)
    if k == 1:
        eps = torch.rand((n,) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    elif real.dim() == 5 and real.shape[1] % k == 0:
        per = real.shape[1] // k  # consecutive pairs read by one score column
        eps = torch.rand(n, k, 1, 1, 1, 1, device=real.device, dtype=real.dtype)
        eps = eps.expand(n, k, per, 1, 1, 1).reshape(n, k * per, 1, 1, 1)
    else:
        raise ValueError(f"cannot group inputs {tuple(real.shape)} into {k} score columns")
    mix = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    # a torch.compile'd critic cannot be differentiated twice (AOTAutograd has no double
    # backward): the penalty goes through the eager module it wraps, same weights
    scores = getattr(critic, "_orig_mod", critic)(mix)
    (grad,) = torch.autograd.grad(scores.sum(), mix, create_graph=True)
    norm = torch.linalg.vector_norm(grad.float().reshape(n, k, -1), dim=2)
    return ((norm - 1.0) ** 2).mean()


@dataclass(frozen=True)
class Objective:
    """One GAN objective: losses, critic schedule, optimisers and critic clipping."""

    name: str
    n_critic: int
    optimizer: str  # "adam" or "rmsprop" (torch defaults apart from lr)
    lr: float
    betas: tuple[float, float] | None = None
    clip: float | None = None  # WGAN: clamp all critic parameters to [-clip, clip] after each step
    gp_weight: float = 0.0  # WGAN-GP: λ
    critic_bn: bool = True  # BatchNorm in the critic's middle layers
    warmup_iterations: int = 0  # WGAN: warmup_steps critic steps while iteration < warmup_iterations ...
    warmup_every: int = 0  # ... and whenever iteration % warmup_every == 0
    warmup_steps: int = 0

    # -- schedule and optimisers ---------------------------------------------------------------
    def n_critic_steps(self, iteration: int) -> int:
        """Critic steps before generator iteration ``iteration`` (0-based)."""
        if self.warmup_steps and (iteration < self.warmup_iterations or iteration % self.warmup_every == 0):
            return self.warmup_steps
        return self.n_critic

    def make_optimizers(self, G, D, lr: float | None = None):
        """``(opt_G, opt_D)`` with the reference settings; ``lr`` overrides both learning rates."""
        lr = self.lr if lr is None else float(lr)

        def make(module):
            params = [p for p in module.parameters()]
            if self.optimizer == "rmsprop":
                return torch.optim.RMSprop(params, lr=lr)
            fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
            return torch.optim.Adam(params, lr=lr, betas=self.betas, fused=fused or None)

        return make(G), make(D)

    def after_critic_step(self, critic) -> None:
        """WGAN weight clipping of every critic parameter (BN terms too); a no-op otherwise."""
        if self.clip is None:
            return
        with torch.no_grad():
            for p in critic.parameters():
                p.clamp_(-self.clip, self.clip)

    # -- losses ------------------------------------------------------------------------------
    def critic_loss(self, critic, real: torch.Tensor, fake: torch.Tensor):
        """``(loss, stats)`` for one critic step; ``fake`` is detached here."""
        fake = fake.detach()
        d_real = critic(real).float()
        d_fake = critic(fake).float()
        stats = {"d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach()}
        if self.name == "gan":
            loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + \
                F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        elif self.name in ("wgan", "wgan-gp"):
            # METHODS C.1 sign: the critic scores real low and fake high
            distance = d_fake.mean() - d_real.mean()
            loss = -distance
            stats["wasserstein"] = distance.detach()
            if self.gp_weight:
                penalty = gradient_penalty(critic, real, fake)
                loss = loss + self.gp_weight * penalty
                stats["gp"] = penalty.detach()
        elif self.name == "lsgan":
            loss = 0.5 * ((d_real - 1.0) ** 2).mean() + 0.5 * (d_fake**2).mean()
        elif self.name == "hinge":
            loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
        else:  # pragma: no cover - the constructor table below is closed
            raise ValueError(self.name)
        return loss, stats

    def generator_loss(self, critic, fake: torch.Tensor) -> torch.Tensor:
        """Generator loss on fakes that carry the generator's graph."""
        d_fake = critic(fake).float()
        if self.name == "gan":  # non-saturating
            return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
        if self.name in ("wgan", "wgan-gp"):  # METHODS C.1 sign: the generator lowers its fakes' scores
            return d_fake.mean()
        if self.name == "lsgan":
            return 0.5 * ((d_fake - 1.0) ** 2).mean()
        if self.name == "hinge":
            return -d_fake.mean()
        raise ValueError(self.name)  # pragma: no cover


OBJECTIVES = {
    "gan": Objective("gan", n_critic=1, optimizer="adam", lr=2e-4, betas=(0.5, 0.999), critic_bn=True),
    "wgan": Objective(
        "wgan", n_critic=5, optimizer="rmsprop", lr=5e-5, clip=0.01, critic_bn=True,
        warmup_iterations=25, warmup_every=500, warmup_steps=100,
    ),
    "wgan-gp": Objective("wgan-gp", n_critic=5, optimizer="adam", lr=1e-4, betas=(0.0, 0.9), gp_weight=10.0,
                         critic_bn=False),
    "lsgan": Objective("lsgan", n_critic=1, optimizer="adam", lr=2e-4, betas=(0.5, 0.999), critic_bn=True),
    "hinge": Objective("hinge", n_critic=5, optimizer="adam", lr=2e-4, betas=(0.0, 0.9), critic_bn=False),
}


def get_objective(name: str) -> Objective:
    """The objective called ``name`` (case-insensitive; ``wgan_gp`` and ``wgangp`` also work)."""
    key = str(name).strip().casefold().replace("_", "-")
    key = {"wgangp": "wgan-gp", "ls-gan": "lsgan"}.get(key, key)
    if key not in OBJECTIVES:
        raise ValueError(f"unknown objective '{name}'; one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[key]
