"""The one training loop for every fluorescence model, driven by the CLI and the Train widget alike.

``Trainer.run()`` is a generator of :class:`TrainEvent`: iteration, losses, speed, optional
preview images and checkpoint paths. The caller stops it with :meth:`Trainer.request_stop`
(the loop saves a checkpoint and returns at the next iteration). A run folder holds:

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
from ..devices import describe_device, resolve_device
from .data import CellBatches, stack_hash
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
    log_every: int = 10
    preview_every: int = 100
    preview_count: int = 8
    amp: bool = True  # bf16 autocast and TF32 on CUDA; ignored elsewhere
    compile: bool = False  # torch.compile the generator (the critic's double backward cannot be compiled)
    spectral_norm: bool = False
    lr: float | None = None  # None: the objective's reference learning rate


def _distributed():
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _process_device(name: str):
    """``(rank, world, device)`` of this process; under torchrun each rank takes its own GPU."""
    rank, world = _distributed()
    device = resolve_device(name)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", rank % torch.cuda.device_count())
    return rank, world, device


def _device_label(device, world: int) -> str:
    """The device a model card names: ``cuda:0 (NVIDIA H100) x2`` for two processes."""
    return describe_device(device) + (f" x{world}" if world > 1 else "")


def _rank_seed(seed: int, rank: int, iteration: int) -> int:
    """A resumed rank > 0's seed: the state file holds rank 0's random streams, and the other ranks
    must not draw rank 0's batches."""
    return int(np.random.SeedSequence([seed, rank, iteration]).generate_state(1)[0])


def _average_gradients(params, world: int) -> None:
    """One all-reduce over all of these parameters' gradients (flattened), then divide by the world size."""
    if world == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def torch_rng_state(device: torch.device) -> dict:
    """torch's CPU (and the device's CUDA) random state as checkpoint tensors ``rng.torch`` / ``rng.cuda``."""
    state = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["rng.cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_torch_rng(tensors: dict, device: torch.device) -> None:
    """Undo :func:`torch_rng_state` from a checkpoint's tensors."""
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


def _optimizer_state(prefix: str, optimizer) -> tuple[dict, dict]:
    """Split an optimiser state dict into tensors (safetensors) and JSON (everything else)."""
    state = optimizer.state_dict()
    tensors, per_param = {}, {}
    for pid, values in state["state"].items():
        entry = {}
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{pid}.{name}"] = value
            else:
                entry[name] = value
        per_param[str(pid)] = {"tensors": [n for n, v in values.items() if torch.is_tensor(v)], "values": entry}
    return tensors, {"param_groups": state["param_groups"], "state": per_param}


def _restore_optimizer(prefix: str, optimizer, tensors: dict, saved: dict) -> None:
    state = {}
    for pid, entry in saved["state"].items():
        values = dict(entry["values"])
        for name in entry["tensors"]:
            values[name] = tensors[f"{prefix}.{pid}.{name}"]
        state[int(pid)] = values
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


class Trainer(TrainingLoop):
    """Trains one generator/critic pair on a :class:`CellStack` into ``run_dir`` (the loop: :mod:`.loop`)."""

    divergence_hint = "Try a lower learning rate or the wgan-gp objective."

    def __init__(self, config: TrainConfig, data: CellStack, run_dir, resume: bool = False):
        from ..models import canonical_arch, make_models
        from .objectives import get_objective

        self.config, self.data, self.run_dir = config, data, Path(run_dir)
        self.rank, self.world, self.device = _process_device(config.device)
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
        self.G, self.D = make_models(
            config.arch, n_classes=n_classes, image_size=data.image_size, width=config.width, nz=config.nz,
            critic_bn=self.objective.critic_bn, spectral_norm=config.spectral_norm,
        )
        memory = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        self.G.to(self.device, memory_format=memory)
        self.D.to(self.device, memory_format=memory)
        self.opt_G, self.opt_D = self.objective.make_optimizers(self.G, self.D, lr=config.lr)
        self.forward_G = torch.compile(self.G) if config.compile else self.G

        self.rng = torch.Generator(self.device).manual_seed(config.seed + 1000 * self.rank)
        torch.manual_seed(config.seed + 1000 * self.rank)
        self.batches = CellBatches(data, mode, self.device, self.rng)
        preview_rng = torch.Generator(self.device).manual_seed(config.seed)
        self.preview_z = torch.randn(config.preview_count, self.G.nz, generator=preview_rng, device=self.device)
        self.iteration = 0
        self.data_hash = stack_hash(data)
        self._stop = False
        self.last_checkpoint: Path | None = None
        if resume:
            self._resume()
        elif self.rank == 0 and self.state_path.exists():
            raise FileExistsError(f"{self.run_dir} already holds a training run; resume it or choose a new folder")

    # -- paths and metadata ------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.run_dir / "train_state.safetensors"

    @property
    def model_path(self) -> Path:
        return self.run_dir / "generator.safetensors"

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
            "device": _device_label(self.device, self.world),
            "simulated_training_data": bool(self.data.simulated),
        }

    # -- checkpoints -------------------------------------------------------------------------
    def _weights_finite(self) -> bool:
        return all(torch.isfinite(p).all() for m in (self.G, self.D) for p in m.parameters())

    def save(self) -> Path | None:
        if self.rank != 0:
            return None
        if not self._weights_finite():
            return None  # never overwrite the last good checkpoint with broken weights
        tensors = {f"G.{k}": v for k, v in self.G.state_dict().items()}
        tensors.update({f"D.{k}": v for k, v in self.D.state_dict().items()})
        opt_g_t, opt_g = _optimizer_state("optG", self.opt_G)
        opt_d_t, opt_d = _optimizer_state("optD", self.opt_D)
        tensors.update(opt_g_t)
        tensors.update(opt_d_t)
        tensors["rng.data"] = self.rng.get_state()
        tensors.update(torch_rng_state(self.device))
        meta = {
            "kind": "train-state",
            "generator_config": self.G.config,
            "critic_config": self.D.config,
            "optimizers": {"G": opt_g, "D": opt_d},
            "iteration": self.iteration,
            "data_sha256": self.data_hash,
            "train_config": asdict(self.config),
        }
        checkpoints.save(self.state_path, tensors, meta)
        checkpoints.save_generator(self.model_path, self.G, self.model_meta())
        self.last_checkpoint = self.state_path
        return self.state_path

    def _resume(self) -> None:
        tensors, meta = checkpoints.load(self.state_path, kind="train-state")
        if meta["generator_config"] != self.G.config or meta["critic_config"] != self.D.config:
            raise checkpoints.CheckpointError(
                f"{self.state_path}: holds a {meta['generator_config'].get('arch')} run with config "
                f"{meta['generator_config']}, not the {self.G.config} asked for"
            )
        if meta["data_sha256"] != self.data_hash:
            raise checkpoints.CheckpointError(
                f"{self.state_path}: was trained on other data (hash {meta['data_sha256'][:12]}…); "
                "resume with the same cells"
            )
        checkpoints.load_module_state(self.G, tensors, self.state_path, prefix="G.")
        checkpoints.load_module_state(self.D, tensors, self.state_path, prefix="D.")
        _restore_optimizer("optG", self.opt_G, tensors, meta["optimizers"]["G"])
        _restore_optimizer("optD", self.opt_D, tensors, meta["optimizers"]["D"])
        self.rng.set_state(tensors["rng.data"])
        restore_torch_rng(tensors, self.device)
        self.iteration = meta["iteration"]
        if self.rank:
            seed = _rank_seed(self.config.seed, self.rank, self.iteration)
            self.rng.manual_seed(seed)
            torch.manual_seed(seed)
        self.last_checkpoint = self.state_path

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
        obj = self.objective
        self.G.train()
        self.D.train()
        for p in self.D.parameters():
            p.requires_grad_(True)
        for _ in range(obj.n_critic_steps(self.iteration)):
            real = self.batches(self.config.batch_size)
            with torch.no_grad(), self._autocast():
                fake = self.forward_G(self._noise())
            self.opt_D.zero_grad(set_to_none=True)
            with self._autocast():
                d_loss, stats = obj.critic_loss(self.D, real, fake.float())
            d_loss.backward()
            _average_gradients(self.D.parameters(), self.world)
            self.opt_D.step()
            obj.after_critic_step(self.D)
        for p in self.D.parameters():
            p.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        with self._autocast():
            g_loss = obj.generator_loss(self.D, self.forward_G(self._noise()))
        g_loss.backward()
        _average_gradients(self.G.parameters(), self.world)
        self.opt_G.step()
        self.iteration += 1
        return {"critic": d_loss.detach(), "generator": g_loss.detach(), **{k: v.detach() for k, v in stats.items()}}

    def preview(self) -> np.ndarray:
        self.G.eval()
        with torch.no_grad():
            images = self.G(self.preview_z).float().cpu().numpy()
        self.G.train()
        return images
