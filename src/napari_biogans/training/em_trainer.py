"""The EM training loop: SGAN, DSGAN, JointGAN (METHODS F.6-F.7) and conditional label synthesis,
driven by the CLI and widgets.

Modes
-----
* ``sgan``: the label GAN (G_y, D_y) and the label -> image cGAN (G_x, D_x on [y, x] pairs,
  weighted L1 ``w = 1 + 1·membrane + 3·mitochondria``, λ = 10). Eq. 4 of the paper decouples
  the two, so both train side by side in every iteration rather than one after the other;
  each is exactly its stage's recipe.
* ``dsgan``: G_y, G_x and F_y trained end to end with F.6's losses (λ_reg 10, λ_B 10, λ_cyc 5,
  λ_fake 1). ``init_label_gan`` starts G_y (and D_y when the pyramids match) from a finished
  label GAN, the reference's undocumented "pretrained" step (I.7).
* ``joint``: one GAN over (membrane, mitochondria, image).
* ``conditional``: mitochondria given membranes (the paper's split y = (y1, y2), its
  supplement B): the CRN :class:`ConditionalLabelGenerator` draws the mitochondria channel from
  a real membrane channel and noise; D_y, the label GAN's pyramid (F.3, F.7 stage 1), judges
  (membrane, mitochondria) pairs. The label GAN's recipe otherwise (crops, down-sampling, pool,
  ``g_steps`` 2), with the adversarial loss alone: a regression term would pull the mitochondria
  towards their mean layout, and diverse layouts for one membrane map are the point (Fig. 14).

The label GAN works at ``1 / label_downsample`` of the section's resolution (F.7: sections
resized 1024 -> 512; DSGAN: 512 crops seen at 256); G_x works at full resolution. The one
image generator is the CRN of F.4 in both sgan and dsgan (the reference's SGAN stage 2 used a
U-Net; the CRN is the paper's own choice and what tiled rendering needs).

Every iteration does one step per discriminator, then the generator steps; the first generator
step re-uses the fakes the discriminators just saw, further ones (``g_steps``, 2 in the SGAN and
joint recipes) draw new noise. Discriminators see fakes through a history pool of 50 (F.3).
Losses use ``BCEWithLogits`` (the discriminators return logits). The learning rate is constant,
then decays linearly to 0 over the last ``decay_iterations`` (F.7, per iteration instead of
per epoch).

A run folder holds ``train_state.safetensors`` (every model, optimiser, pool and RNG: an exact
resume), ``em_model.safetensors`` (G_y and G_x only; :func:`~napari_biogans.models.em_inference.load_em_model`) and ``losses.csv``.
Non-finite losses stop training with :class:`TrainingDiverged`, naming the last good
checkpoint; checkpoints are only written from finite weights.

Under ``torchrun`` every process draws its own crops and noise (and keeps its own history
pools), the gradients of each optimiser step are averaged across processes as in the
fluorescence trainer, and rank 0 writes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import checkpoints
from ..data import em
from ..models.em import (
    CascadeGenerator,
    ConditionalLabelGenerator,
    JointGenerator,
    LabelGenerator,
    MultiScaleDiscriminator,
    UNet,
)
# inference (EMModel, load_em_model) lives in models.em_inference; the trainer shares these with it
from ..models.em_inference import MODEL_KIND, _codes, _given_membranes, _uint8
from .distributed import device_label, process_device
from .loop import STATE_FILE, TrainEvent, TrainingDiverged, TrainingLoop  # noqa: F401  (STATE_FILE: public name)

MODES = ("sgan", "dsgan", "joint", "conditional")
LABEL_PYRAMIDS = {"sgan": ((3, 1, 0.5), (3, 2, 0.4), (3, 4, 0.1)), "dsgan": ((3, 1, 0.5), (3, 2, 0.4)),
                  "joint": ((3, 1, 0.5), (3, 2, 0.4), (3, 4, 0.1)),
                  "conditional": ((3, 1, 0.5), (3, 2, 0.4), (3, 4, 0.1))}
IMAGE_PYRAMIDS = {"sgan": ((3, 1, 0.5), (4, 1, 0.5)), "dsgan": ((3, 1, 0.3), (4, 1, 0.3), (3, 2, 0.2), (4, 2, 0.2))}
MODEL_FILE = "em_model.safetensors"
DIVERSITY_WEIGHT = 0.2  # the mode-seeking term's default for sgan and dsgan (measured: docs/evaluation.md)

__all__ = ["MODES", "EMTrainConfig", "TrainEvent", "EMPreview", "EMTrainer", "HistoryPool", "TrainingDiverged",
           "data_hash"]


@dataclass
class EMTrainConfig:
    mode: str = "dsgan"
    iterations: int = 20000
    decay_iterations: int | None = None  # None: the last quarter (the reference's 150 + 50 epochs)
    batch_size: int = 1  # the reference's
    crop: int = 512  # image crops at full resolution (SGAN stage 2, DSGAN)
    label_crop: int | None = None  # sgan/joint/conditional label-GAN crops; None: whole sections (dsgan: ``crop``)
    label_downsample: int = 2
    label_width: int = 32  # G_y (the conditional CRN too)
    label_layers: int = 5  # G_y factor 2**(layers+1) = 64
    image_width: int = 64  # G_x
    image_blocks: int = 6  # G_x and the conditional CRN: factor 2**blocks = 64
    label_d_width: int = 32
    image_d_width: int = 64
    label_pyramid: tuple | None = None  # None: the mode's recipe (F.7)
    image_pyramid: tuple | None = None
    reconstructor_width: int = 32
    reconstructor_depth: int = 7
    g_steps: int | None = None  # None: 2 for sgan and joint, 1 for dsgan (F.7)
    lr: float = 2e-4
    pool_size: int = 50
    l1_weight: float = 10.0  # SGAN stage 2
    membrane_weight: float = 1.0
    mito_weight: float = 3.0
    lambda_reg: float = 10.0  # DSGAN
    lambda_b: float = 10.0
    lambda_cyc: float = 5.0
    lambda_fake: float = 1.0
    # dsgan: whether the cycle term on generated labels, λ_cyc·λ_fake·BCE(F_y(G_x(ỹ)), ỹ), also trains G_y, as
    # in the reference (F.6); off, it trains G_x alone (it mildly favours easily rendered labels)
    fake_cycle_trains_gy: bool = True
    # sgan/dsgan: weight of a mode-seeking term for G_y (Mao et al. 2019): mean|G_y(z1) − G_y(z2)| /
    # mean|z1 − z2| for two fresh noises is pushed up (its inverse is added to G_y's loss). Without it G_y
    # learns to ignore its noise within a few hundred iterations and tiles one motif (docs/evaluation.md,
    # "G_y collapse"). None: 0.2 for sgan and dsgan; 0 = off (the reference)
    diversity_weight: float | None = None
    init_label_gan: str | None = None  # dsgan: a train state or EM model to start G_y (and D_y) from
    init_image_generator: str | None = None  # sgan/dsgan: an EM model or train state to start G_x from
    # dsgan: keep G_x as ``init_image_generator`` gave it and train G_y and D_y alone (the label GAN, as the
    # reference's pretraining of G_y): a new G_y for a finished G_x at a tenth of an iteration's CPU cost
    freeze_image_generator: bool = False
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 1000
    keep_models_every: int = 0  # also keep the model file of every such iteration (loop.KEPT_MODELS)
    log_every: int = 10
    preview_every: int = 200
    amp: bool = True  # bf16 autocast on CUDA; ignored elsewhere
    half_model: bool = False  # store the model file in float16


@dataclass
class EMPreview:
    labels: np.ndarray  # (H, W) uint8 codes 0/1/2
    image: np.ndarray  # (H, W) uint8; for ``conditional``, the generated mitochondria channel


def data_hash(images: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (images, labels):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class HistoryPool:
    """F.3's pool of past fakes: until full, fakes pass through and are stored; then each fake is,
    with probability 1/2, swapped for a random stored one (which it replaces). Stored as float16
    (half the memory and checkpoint size; the discriminator does not need more)."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng, self.items = size, rng, []

    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return fakes
        out = []
        for fake in fakes.detach():
            if len(self.items) < self.size:
                self.items.append(fake.half())
                out.append(fake)
            elif self.rng.random() < 0.5:
                j = int(self.rng.integers(self.size))
                out.append(self.items[j].to(fake.dtype))
                self.items[j] = fake.half()
            else:
                out.append(fake)
        return torch.stack(out)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _labels_tensor(codes: np.ndarray, device) -> torch.Tensor:
    """Codes (B, H, W) -> (B, 2, H, W) in {-1, 1}."""
    return torch.from_numpy(em.one_hot(codes) * 2 - 1).to(device)


def _image_tensor(images: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(images.astype(np.float32) / 127.5 - 1)[:, None].to(device)


class EMTrainer(TrainingLoop):
    """Trains one EM mode on sections ``images`` (S, H, W) uint8 with ``labels`` (S, H, W) codes (the loop:
    :mod:`.loop`)."""

    check_every_step = True  # an EM step is long: one host sync per step costs nothing and stops NaN at once
    model_file = MODEL_FILE
    data_noun = "sections"

    def __init__(self, config: EMTrainConfig, images: np.ndarray, labels: np.ndarray, run_dir, resume: bool = False,
                 description: str = ""):
        if config.mode not in MODES:
            raise ValueError(f"unknown EM training mode '{config.mode}'; one of {MODES}")
        if images.ndim != 3 or images.dtype != np.uint8 or labels is None or labels.shape != images.shape:
            raise ValueError("EM training needs uint8 sections (S, H, W) and label codes of the same shape")
        self.config, self.run_dir, self.description = config, Path(run_dir), description
        self.images, self.labels = images, labels.astype(np.uint8)
        self.data_hash = data_hash(self.images, self.labels)
        self.rank, self.world, self.device = process_device(config.device)
        self.amp = config.amp and self.device.type == "cuda"
        cfg, mode = config, config.mode
        self.label_crop = cfg.crop if mode == "dsgan" else cfg.label_crop or min(images.shape[1:])
        self.label_side = self.label_crop // cfg.label_downsample
        self.g_steps = cfg.g_steps or (1 if mode == "dsgan" else 2)
        self.decay = cfg.iterations // 4 if cfg.decay_iterations is None else cfg.decay_iterations

        torch.manual_seed(cfg.seed)
        if mode == "conditional":
            label_generator = ConditionalLabelGenerator(width=cfg.label_width, n_blocks=cfg.image_blocks)
        else:
            label_generator = (JointGenerator if mode == "joint" else LabelGenerator)(cfg.label_width, cfg.label_layers)
        self.models = {
            "Gy": label_generator,
            "Dy": MultiScaleDiscriminator(3 if mode == "joint" else 2, cfg.label_d_width,
                                          cfg.label_pyramid or LABEL_PYRAMIDS[mode]),
        }
        frozen = cfg.freeze_image_generator
        if cfg.diversity_weight and mode not in ("sgan", "dsgan"):
            raise ValueError("the mode-seeking term (diversity_weight) is for the sgan and dsgan label generators")
        self.diversity_weight = (DIVERSITY_WEIGHT if mode in ("sgan", "dsgan") else 0.0) \
            if cfg.diversity_weight is None else cfg.diversity_weight
        if frozen and (mode != "dsgan" or not cfg.init_image_generator):
            raise ValueError("freeze_image_generator needs a dsgan run with init_image_generator")
        if mode in ("sgan", "dsgan"):
            self.models["Gx"] = CascadeGenerator(width=cfg.image_width, n_blocks=cfg.image_blocks)
            if not frozen:
                self.models["Dx"] = MultiScaleDiscriminator(3, cfg.image_d_width,
                                                            cfg.image_pyramid or IMAGE_PYRAMIDS[mode])
        if mode == "dsgan" and not frozen:
            self.models["Fy"] = UNet(1, 2, cfg.reconstructor_width, cfg.reconstructor_depth)
        self._check_sizes()
        memory = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        for model in self.models.values():
            model.to(self.device, memory_format=memory)
        groups = {"Gy": ["Gy"], "Dy": ["Dy"], "Gx": ["Gx", "Fy"] if mode == "dsgan" else ["Gx"], "Dx": ["Dx"]}
        self.optimizers = {
            name: torch.optim.Adam([p for m in members for p in self.models[m].parameters()], lr=cfg.lr,
                                   betas=(0.5, 0.999))
            for name, members in groups.items() if all(m in self.models for m in members)
        }
        # every rank starts from the same weights (seeded above) but draws its own crops and noise
        self.data_rng = np.random.default_rng([cfg.seed, self.rank] if self.rank else cfg.seed)
        self.noise_rng = torch.Generator(self.device).manual_seed(cfg.seed + 1000 * self.rank)
        self.pools = {"y": HistoryPool(cfg.pool_size, self.data_rng)}
        if "Dx" in self.models:
            self.pools["x"] = HistoryPool(cfg.pool_size, self.data_rng)
        preview_rng = torch.Generator(self.device).manual_seed(cfg.seed + 1)
        side = cfg.crop if "Gx" in self.models else self.label_crop
        self.preview_noise = self._noise(self.models["Gy"], side // cfg.label_downsample, 1, preview_rng)
        if "Gx" in self.models:
            self.preview_image_noise = self._noise(self.models["Gx"], side, 1, preview_rng)
        if mode == "conditional":  # a fixed real membrane map; its own RNG keeps the data stream as it is
            crop = em.random_crops(images, labels, side, 1, np.random.default_rng(cfg.seed + 1), augment=False)[1]
            self.preview_membranes = crop[0] == em.MEMBRANE
        self._start(resume)
        if not resume and cfg.init_label_gan:
            self._init_label_gan(Path(cfg.init_label_gan))
        if not resume and cfg.init_image_generator:
            self._init_image_generator(Path(cfg.init_image_generator))

    # -- set-up --------------------------------------------------------------------------------
    def _check_sizes(self) -> None:
        cfg = self.config
        h, w = self.images.shape[1:]
        gy, dy = self.models["Gy"], self.models["Dy"]
        if self.label_crop > min(h, w) or ("Gx" in self.models and cfg.crop > min(h, w)):
            raise ValueError(f"crops ({self.label_crop}, {cfg.crop}) must fit the {h}x{w} sections")
        if self.label_crop % cfg.label_downsample or self.label_side % gy.factor:
            raise ValueError(f"label crop {self.label_crop} / {cfg.label_downsample} must be a multiple of "
                             f"G_y's factor {gy.factor}")
        dy.check_input_side(self.label_side)
        if "Gx" in self.models:
            factor = self.models["Gx"].factor
            if "Fy" in self.models:
                factor = math.lcm(factor, self.models["Fy"].factor)
            if cfg.crop % factor:
                raise ValueError(f"crop {cfg.crop} must be a multiple of {factor} (G_x and F_y down-sampling)")
            if cfg.crop % (cfg.label_downsample * gy.factor):  # dsgan's G_y and the previews sample at crop size
                raise ValueError(f"crop {cfg.crop} must be a multiple of {cfg.label_downsample * gy.factor} "
                                 f"(label_downsample x G_y's factor)")
            if "Dx" in self.models:
                self.models["Dx"].check_input_side(cfg.crop)

    def _init_label_gan(self, path: Path) -> None:
        tensors, meta = checkpoints.load(path)
        if meta.get("kind") == "train-state":
            configs, prefixes = meta.get("configs", {}), {"Gy": "Gy.", "Dy": "Dy."}
        elif meta.get("kind") == MODEL_KIND:
            configs, prefixes = {"Gy": meta["label_generator"]}, {"Gy": "label_generator."}
        else:
            raise checkpoints.CheckpointError(f"{path}: not an EM train state or EM model")
        if configs.get("Gy") != self.models["Gy"].config:
            raise checkpoints.CheckpointError(
                f"{path}: its label generator {configs.get('Gy')} does not match {self.models['Gy'].config}")
        for name, prefix in prefixes.items():
            if configs.get(name) == self.models[name].config:
                checkpoints.load_module_state(self.models[name], tensors, path, prefix=prefix)

    def _init_image_generator(self, path: Path) -> None:
        """G_x from a finished run (its train state or EM model), so a retrained G_y keeps today's renderer."""
        if "Gx" not in self.models:
            raise ValueError(f"a {self.config.mode} run has no image generator to start from {path}")
        tensors, meta = checkpoints.load(path)
        if meta.get("kind") == "train-state":
            config, prefix = meta.get("configs", {}).get("Gx"), "Gx."
        elif meta.get("kind") == MODEL_KIND:
            config, prefix = meta.get("image_generator"), "image_generator."
        else:
            raise checkpoints.CheckpointError(f"{path}: not an EM train state or EM model")
        if config != self.models["Gx"].config:
            raise checkpoints.CheckpointError(
                f"{path}: its image generator {config} does not match {self.models['Gx'].config}")
        checkpoints.load_module_state(self.models["Gx"], tensors, path, prefix=prefix)

    # -- metadata and the trainer's own state --------------------------------------------------
    def model_meta(self) -> dict:
        cfg = self.config
        return {
            "mode": cfg.mode,
            "label_downsample": cfg.label_downsample,
            "crop": cfg.crop if "Gx" in self.models else self.label_crop,
            "label_codes": {str(k): v for k, v in em.LABEL_NAMES.items()},
            "label_channels": ["membrane", "mitochondria"],
            "data": {"description": self.description, "sha256": self.data_hash, "sections": int(len(self.images)),
                     "section_shape": list(self.images.shape[1:])},
            "train_config": asdict(cfg),
            "iterations": self.iteration,
            "device": device_label(self.device, self.world),
        }

    def geometry(self) -> dict:
        """The crop sizes the pools' fakes depend on."""
        return {"crop": self.config.crop if "Gx" in self.models else None, "label_crop": self.label_crop,
                "label_downsample": self.config.label_downsample}

    def save_model(self, path) -> Path:
        """The model file: G_y and G_x weights (float16 with ``half_model``) and what using them needs."""
        tensors = {}
        parts = {"label_generator": self.models["Gy"], "image_generator": self.models.get("Gx")}
        for prefix, model in parts.items():
            if model is not None:
                for key, value in model.state_dict().items():
                    half = self.config.half_model and value.is_floating_point()
                    tensors[f"{prefix}.{key}"] = value.half() if half else value
        meta = {
            "kind": MODEL_KIND,
            "label_generator": self.models["Gy"].config,
            "image_generator": self.models["Gx"].config if "Gx" in self.models else None,
            "normalisation": checkpoints.NORMALISATION,
            "dtype": "float16" if self.config.half_model else "float32",
            "versions": checkpoints.library_versions(),
            **self.model_meta(),
        }
        return checkpoints.save(path, tensors, meta)

    def extra_state(self) -> tuple[dict, dict]:
        """The history pools, the noise stream and the crop stream (numpy, in the JSON metadata)."""
        tensors = {f"pool.{key}.{i}": item for key, pool in self.pools.items() for i, item in enumerate(pool.items)}
        tensors["rng.noise"] = self.noise_rng.get_state()
        return tensors, {"mode": self.config.mode, "pools": {key: len(pool.items) for key, pool in self.pools.items()},
                         "data_rng": self.data_rng.bit_generator.state, "geometry": self.geometry()}

    def restore_extra_state(self, tensors: dict, meta: dict) -> None:
        for key, pool in self.pools.items():
            pool.items = [tensors[f"pool.{key}.{i}"].to(self.device) for i in range(meta["pools"][key])]
        self.data_rng.bit_generator.state = meta["data_rng"]
        self.noise_rng.set_state(tensors["rng.noise"])

    def reseed(self, seed: int) -> None:
        self.data_rng = np.random.default_rng(seed)
        for pool in self.pools.values():
            pool.rng = self.data_rng
        self.noise_rng.manual_seed(seed)
        torch.manual_seed(seed)

    def check_resumable(self, meta: dict) -> None:
        configs = {name: model.config for name, model in self.models.items()}
        if meta.get("mode") != self.config.mode or meta.get("configs") != configs:
            raise checkpoints.CheckpointError(
                f"{self.state_path}: holds a {meta.get('mode')} run with models {meta.get('configs')}, "
                f"not the {self.config.mode} run with {configs} asked for"
            )
        changed = [k for k, v in self.geometry().items() if meta["geometry"].get(k) != v]
        if changed:
            raise checkpoints.CheckpointError(
                f"{self.state_path}: was trained with another {' and '.join(changed)} (its pooled fakes have that "
                f"size): {meta['geometry']}; resume with the same"
            )

    # -- data ----------------------------------------------------------------------------------
    def _crops(self, size: int):
        images, labels = em.random_crops(self.images, self.labels, size, self.config.batch_size, self.data_rng)
        return _labels_tensor(labels, self.device), _image_tensor(images, self.device)

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        d = self.config.label_downsample
        return F.avg_pool2d(x, d) if d > 1 else x

    def _noise(self, generator, side: int, batch: int | None = None, rng=None) -> torch.Tensor:
        shape = (batch or self.config.batch_size, *generator.noise_shape(side, side))
        return torch.randn(shape, generator=rng or self.noise_rng, device=self.device)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    # -- steps ---------------------------------------------------------------------------------
    def _set_lr(self) -> None:
        """Constant, then linear decay to 0 over the last ``decay`` iterations (F.7 per iteration)."""
        start = self.config.iterations - self.decay
        factor = 1.0 - max(0, self.iteration + 1 - start) / (self.decay + 1)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = self.config.lr * factor

    def _d_step(self, name: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """½·Σ_k [BCE(D_k(fake), 0) + BCE(D_k(real), 1)] on a pooled fake, unweighted (F.3)."""
        D = self.models[name]
        D.requires_grad_(True)
        with self._autocast():
            loss = 0.5 * sum(_bce(f, 0.0) + _bce(r, 1.0) for f, r in zip(D(fake), D(real)))
        self.optimizer_step((name,), loss)
        return loss.detach()

    def _adversarial(self, name: str, fake: torch.Tensor) -> torch.Tensor:
        """Σ_k w_k·BCE(D_k(fake), 1), with D frozen."""
        D = self.models[name]
        D.requires_grad_(False)
        return sum(w * _bce(out, 1.0) for w, out in zip(D.weights, D(fake)))

    def _generated_labels(self) -> torch.Tensor:
        Gy = self.models["Gy"]
        return Gy(self._noise(Gy, self.label_side))

    def _label_gan(self, real: torch.Tensor, generate=None) -> dict:
        """D_y step, then ``g_steps`` G_y steps (the first on the fakes D_y saw); ``generate()`` draws
        fakes with new noise (default: G_y from noise alone)."""
        generate = generate or self._generated_labels
        with self._autocast():
            fake = generate()
        d_loss = self._d_step("Dy", real, self.pools["y"].query(fake.float()))
        for k in range(self.g_steps):
            with self._autocast():
                if k:
                    fake = generate()
                g_loss = self._adversarial("Dy", fake)
                extra = self._add_diversity_term({"loss": g_loss})
            self.optimizer_step(("Gy",), extra.pop("loss"))
        return {"D_y": d_loss, "G_y": g_loss.detach(), **extra}

    def _pixel_weights(self, y: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return 1 + cfg.membrane_weight * (y[:, :1] > 0) + cfg.mito_weight * (y[:, 1:2] > 0)

    def _sgan_step(self) -> dict:
        losses = self._label_gan(self._down(self._crops(self.label_crop)[0]))
        Gx = self.models["Gx"]
        y, x = self._crops(self.config.crop)
        weights = self._pixel_weights(y)
        with self._autocast():
            fake = Gx(y, self._noise(Gx, self.config.crop))
        real_pair = torch.cat([y, x], 1)
        losses["D_x"] = self._d_step("Dx", real_pair, self.pools["x"].query(torch.cat([y, fake.float()], 1)))
        for k in range(self.g_steps):
            with self._autocast():
                if k:
                    fake = Gx(y, self._noise(Gx, self.config.crop))
                adv = self._adversarial("Dx", torch.cat([y, fake], 1))
                l1 = (weights * (fake.float() - x).abs()).mean()
                loss = adv + self.config.l1_weight * l1
            self.optimizer_step(("Gx",), loss)
        losses.update(G_x=adv.detach(), L1=l1.detach())
        return losses

    def _dsgan_step(self) -> dict:
        """F.6: one D_y step, one D_x step, then one joint step of G_y, G_x and F_y."""
        cfg = self.config
        y, x = self._crops(cfg.crop)
        if cfg.freeze_image_generator:  # G_y's own part of the step: nothing else reaches it
            return self._label_gan(self._down(y))
        Gy, Gx, Fy = self.models["Gy"], self.models["Gx"], self.models["Fy"]
        z2 = self._noise(Gx, cfg.crop)
        with self._autocast():
            y_small = Gy(self._noise(Gy, cfg.crop // cfg.label_downsample))
            y_fake = F.interpolate(y_small, scale_factor=cfg.label_downsample, mode="bilinear", align_corners=False)
            x_hat = Gx(y, z2)
            x_tilde = Gx(y_fake if cfg.fake_cycle_trains_gy else y_fake.detach(), z2)
        d_y = self._d_step("Dy", self._down(y), self.pools["y"].query(y_small.float()))
        d_x = self._d_step("Dx", torch.cat([y, x], 1), self.pools["x"].query(torch.cat([y, x_hat.float()], 1)))
        target = (y + 1) / 2
        with self._autocast():
            adv_y = self._adversarial("Dy", y_small)
            adv_x = self._adversarial("Dx", torch.cat([y, x_hat], 1))
            reg = (x_hat.float() - x).abs().mean()
            bce_real = F.binary_cross_entropy_with_logits(Fy.logits(x), target)
            cyc = F.binary_cross_entropy_with_logits(Fy.logits(x_hat), target)
            # not detached on the input side: this term trains G_y through G_x (F.6)
            cyc_fake = F.binary_cross_entropy_with_logits(Fy.logits(x_tilde), ((y_fake.float() + 1) / 2).detach())
            loss = (adv_y + adv_x + cfg.lambda_reg * reg + cfg.lambda_b * bce_real + cfg.lambda_cyc * cyc
                    + cfg.lambda_cyc * cfg.lambda_fake * cyc_fake)
            losses = self._add_diversity_term({"loss": loss})
        self.optimizer_step(("Gy", "Gx"), losses.pop("loss"))
        return {"D_y": d_y, "D_x": d_x, "G_y": adv_y.detach(), "G_x": adv_x.detach(), "reg": reg.detach(),
                "B": bce_real.detach(), "cyc": cyc.detach(), "cyc_fake": cyc_fake.detach(), **losses}

    def _add_diversity_term(self, losses: dict) -> dict:
        """``losses["loss"]`` plus the mode-seeking term, and its ``spread`` (Mao et al. 2019): mean|G_y(z) −
        G_y(z')| / mean|z − z'| for two fresh noises; nothing when ``diversity_weight`` is 0."""
        weight = self.diversity_weight
        if not weight:
            return losses
        Gy = self.models["Gy"]
        z, z_other = (self._noise(Gy, self.label_side) for _ in range(2))
        spread = (Gy(z).float() - Gy(z_other).float()).abs().mean() / (z - z_other).abs().mean()
        return {**losses, "loss": losses["loss"] + weight / (spread + 1e-5), "spread": spread.detach()}

    def _joint_step(self) -> dict:
        y, x = self._crops(self.label_crop)
        return self._label_gan(self._down(torch.cat([y, x], 1)))

    def _conditional_step(self) -> dict:
        """The label GAN on real (membrane, mitochondria) pairs; fakes keep the real membranes."""
        real = self._down(self._crops(self.label_crop)[0])
        membranes, Gy = real[:, :1], self.models["Gy"]

        def generate():
            return torch.cat([membranes, Gy(membranes, self._noise(Gy, self.label_side))], 1)

        return self._label_gan(real, generate)

    def step(self) -> dict:
        """One iteration; returns the losses as 0-d tensors."""
        self._set_lr()
        for model in self.models.values():
            model.train()
        steps = {"sgan": self._sgan_step, "dsgan": self._dsgan_step, "joint": self._joint_step,
                 "conditional": self._conditional_step}
        losses = steps[self.config.mode]()
        self.iteration += 1
        return losses

    # -- previews ------------------------------------------------------------------------------
    def preview(self) -> EMPreview:
        """A fixed-noise sample: labels from G_y (up-sampled to full resolution), then the image
        G_x renders from those hard labels, as the product does; the joint image for ``joint``;
        mitochondria drawn on a fixed real membrane map for ``conditional``."""
        Gy, d = self.models["Gy"], self.config.label_downsample
        Gy.eval()
        try:
            if self.config.mode == "conditional":
                return EMPreview(*_given_membranes(Gy, self.preview_membranes, self.preview_noise, d))
            with torch.no_grad():
                out = F.interpolate(Gy(self.preview_noise).float(), scale_factor=d, mode="bilinear",
                                    align_corners=False)
                if self.config.mode == "joint":
                    labels, image = JointGenerator.split(out)
                    return EMPreview(_codes(labels)[0], _uint8(image[0, 0]))
                codes = _codes(out)
                image = self.models["Gx"](_labels_tensor(codes, self.device), self.preview_image_noise)
                return EMPreview(codes[0], _uint8(image[0, 0]))
        finally:
            Gy.train()
