"""The one training loop for every fluorescence model, driven by the CLI and the Train widget alike.

``Trainer.run(stop)`` is a job of :class:`~napari_biogans.jobs.Update` s whose payloads are
:class:`TrainEvent` s: iteration, losses, speed, optional preview images and checkpoint paths.
The caller stops it with a :class:`~napari_biogans.jobs.StopFlag` or :meth:`Trainer.request_stop`
(the loop saves a checkpoint and returns at the next iteration); the loop, checkpoints and resume
are :mod:`.loop`'s. A run folder holds:

* ``train_state.safetensors``: generator, critic, optimisers, RNG states and iteration (resume);
* ``generator.safetensors``: the model file, loadable by name or path everywhere;
* ``losses.csv``: one row per logged iteration.

Non-finite losses stop training with :class:`TrainingDiverged`; checkpoints are only ever
written from finite weights, so the last good one stays on disk.

Several processes (``torchrun --nproc_per_node K biogans train ...``) train data-parallel:
each draws its own batches (seed + rank), gradients are averaged with one all-reduce per
backward pass, rank 0 writes. A resumed run is exact on one process; under torchrun the other
ranks restart their random streams from (seed, rank, iteration). The critic is not wrapped in ``DistributedDataParallel``
because the gradient penalty differentiates through it twice per step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import checkpoints
from ..data.lin import CellStack
from .data import CellBatches, stack_hash
from .distributed import device_label, process_device
from .loop import TrainEvent, TrainingDiverged, TrainingLoop  # noqa: F401  (re-exported: the public names)

# the conditional models score column c of their input as class c, so they take per-class
# batches like the star model (multichannel-masked masks the other greens in its critic).
# Keys are canonical architectures; TrainConfig.arch may also name a variant such as one-class-sep.
BATCH_MODE = {"dcgan": "pooled", "separable": "pooled", "one-class": "per-class", "star": "per-class",
              "multichannel": "composite", "cgan": "per-class", "multichannel-masked": "per-class",
              "projection": "per-class"}


@dataclass
class TrainConfig:
    arch: str = "star"
    objective: str = "wgan-gp"
    iterations: int = 1000
    batch_size: int = 64
    width: int = 64
    nz: int = 100
    seed: int = 42
    device: str = "auto"
    checkpoint_every: int = 500
    keep_models_every: int = 0  # also keep the model file of every such iteration (loop.KEPT_MODELS)
    log_every: int = 10
    preview_every: int = 100
    preview_count: int = 8
    amp: bool = True  # bf16 autocast and TF32 on CUDA; ignored elsewhere
    compile: bool = False  # torch.compile the generator (the critic's double backward cannot be compiled)
    spectral_norm: bool = False
    lr: float | None = None  # None: the objective's reference learning rate


class Trainer(TrainingLoop):
    """Trains one generator/critic pair on a :class:`CellStack` into ``run_dir`` (the loop: :mod:`.loop`).

    ``models`` are ``G`` and ``D``, ``optimizers`` are ``G`` and ``D`` (one phase each: ``n_critic``
    critic steps, then one generator step).
    """

    model_file = "generator.safetensors"
    data_noun = "cells"

    def __init__(self, config: TrainConfig, data: CellStack, run_dir, resume: bool = False):
        from ..models import canonical_arch, make_models
        from .objectives import get_objective

        self.config, self.data, self.run_dir = config, data, Path(run_dir)
        self.rank, self.world, self.device = process_device(config.device)
        arch, _ = canonical_arch(config.arch)
        if arch not in BATCH_MODE:
            raise ValueError(f"unknown model '{config.arch}'; one of {sorted(BATCH_MODE)}")
        self.objective = get_objective(config.objective)
        self.amp = config.amp and self.device.type == "cuda"
        if self.amp:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        torch.manual_seed(config.seed)  # same initial weights on every rank
        mode = BATCH_MODE[arch]
        n_classes = 1 if mode == "pooled" else len(data.class_names)
        G, D = make_models(
            config.arch, n_classes=n_classes, image_size=data.image_size, width=config.width, nz=config.nz,
            critic_bn=self.objective.critic_bn, spectral_norm=config.spectral_norm,
        )
        memory = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        # a compiled channels-last G fails in inductor's backward (a stride assertion in convolution_backward on
        # its 3x5 first layer, torch 2.11 on an H200): the compiled generator stays in the default layout
        memory_G = torch.contiguous_format if config.compile else memory
        self.models = {"G": G.to(self.device, memory_format=memory_G), "D": D.to(self.device, memory_format=memory)}
        opt_G, opt_D = self.objective.make_optimizers(G, D, lr=config.lr)
        self.optimizers = {"G": opt_G, "D": opt_D}
        self.forward_G = torch.compile(G) if config.compile else G

        self.rng = torch.Generator(self.device).manual_seed(config.seed + 1000 * self.rank)
        torch.manual_seed(config.seed + 1000 * self.rank)
        self.batches = CellBatches(data, mode, self.device, self.rng)
        preview_rng = torch.Generator(self.device).manual_seed(config.seed)
        self.preview_z = torch.randn(config.preview_count, G.nz, generator=preview_rng, device=self.device)
        self.data_hash = stack_hash(data)
        self._start(resume)

    @property
    def divergence_hint(self) -> str:
        if self.config.objective == "wgan-gp":  # already the steadiest objective: suggest what is left
            return ("Try a lower learning rate (TrainConfig.lr, below the objective's default) or a smaller width, "
                    "and resume from the kept checkpoint.")
        return "Try a lower learning rate or the wgan-gp objective (--objective wgan-gp)."

    @property
    def G(self):
        return self.models["G"]

    @property
    def D(self):
        return self.models["D"]

    # -- metadata and the trainer's own state --------------------------------------------------
    def describe_data(self) -> dict:
        return {
            "description": self.data.description,
            "simulated": bool(self.data.simulated),
            "sha256": self.data_hash,
            "cells": len(self.data),
            "class_counts": self.data.counts(),
        }

    def model_meta(self) -> dict:
        return {
            "class_names": list(self.data.class_names) if self.G.n_classes > 1 else ["any protein"],
            "proteins_pooled": list(self.data.class_names) if self.G.n_classes == 1 else None,
            "image_size": list(self.data.image_size),
            "channel_names": ["Bgs4"] + list(self.data.class_names if self.G.n_classes > 1 else ["protein"]),
            "data": self.describe_data(),
            "objective": self.config.objective,
            "train_config": asdict(self.config),
            "iterations": self.iteration,
            "device": device_label(self.device, self.world),
            "simulated_training_data": bool(self.data.simulated),
        }

    def save_model(self, path) -> Path:
        return checkpoints.save_generator(path, self.G, self.model_meta())

    def extra_state(self) -> tuple[dict, dict]:
        # generator_config / critic_config: what readers of a run's critic (evaluation.profiling) look for
        return {"rng.data": self.rng.get_state()}, {"generator_config": self.G.config,
                                                    "critic_config": self.D.config}

    def restore_extra_state(self, tensors: dict, meta: dict) -> None:
        self.rng.set_state(tensors["rng.data"])

    def reseed(self, seed: int) -> None:
        self.rng.manual_seed(seed)
        torch.manual_seed(seed)

    def saved_configs(self, meta: dict) -> dict:
        # run folders written before the models dict kept only these two keys
        return meta.get("configs") or {"G": meta.get("generator_config"), "D": meta.get("critic_config")}

    def check_resumable(self, meta: dict) -> None:
        saved = self.saved_configs(meta)
        if saved != {"G": self.G.config, "D": self.D.config}:
            raise checkpoints.CheckpointError(
                f"{self.state_path}: holds a {saved['G'].get('arch')} run with config {saved['G']}, not the "
                f"{self.G.config} asked for"
            )

    # -- the loop ----------------------------------------------------------------------------
    def _noise(self) -> torch.Tensor:
        return torch.randn(self.config.batch_size, self.G.nz, device=self.device, generator=self.rng)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    def step(self) -> dict:
        """One generator iteration: n critic steps (fresh real and fake batches), then one G step.

        The G step draws fresh noise; the reference reused the last critic step's fake batch
        (METHODS I.7). Fresh noise is the usual WGAN-GP practice and needs no retained graph.
        Returns the losses as 0-d tensors (no host sync here).
        """
        obj, G, D = self.objective, self.G, self.D
        G.train()
        D.train()
        D.requires_grad_(True)
        for _ in range(obj.n_critic_steps(self.iteration)):
            real = self.batches(self.config.batch_size)
            with torch.no_grad(), self._autocast():
                fake = self.forward_G(self._noise())
            with self._autocast():
                d_loss, stats = obj.critic_loss(D, real, fake.float())
            self.optimizer_step(("D",), d_loss)
            obj.after_critic_step(D)
        D.requires_grad_(False)
        with self._autocast():
            g_loss = obj.generator_loss(D, self.forward_G(self._noise()))
        self.optimizer_step(("G",), g_loss)
        self.iteration += 1
        return {"critic": d_loss.detach(), "generator": g_loss.detach(), **{k: v.detach() for k, v in stats.items()}}

    def preview(self) -> np.ndarray:
        self.G.eval()
        with torch.no_grad():
            images = self.G(self.preview_z).float().cpu().numpy()
        self.G.train()
        return images
