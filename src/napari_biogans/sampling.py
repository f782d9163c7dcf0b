"""Sampling cells from a generator: reproducible latent codes, red and green noise apart.

A sample is ``(n, 1 + c, H, W)``: channel 0 is the red Bgs4 cell, channels 1..c the green
proteins, all rendered on that same red cell, when the model shares its red (star, projection,
multichannel and the one-protein models). Models whose proteins each draw their own red cell
(one-class, cGAN) give ``(n, 2c, H, W)``, each protein's red ("Bgs4 (Sid2)") before its green, so
no green is shown on a cell it was not made with. The latent codes come back with the pixels, so any
cell can be drawn again, and a seed fixes them: ``red_seed`` draws the red part of the codes
from its own stream ("same red, new greens" keeps ``red_seed`` and changes ``seed``).
A file of samples from a model trained on simulated cells says so (:func:`write_samples`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .data.lin import to_uint8


@dataclass
class Samples:
    images: np.ndarray  # (n, channels, H, W) uint8, channels as named (see pairs_to_channels)
    channel_names: list[str]
    z: np.ndarray  # (n, nz) float32 latent codes
    provenance: dict = field(default_factory=dict)


def latent_codes(n: int, nz: int, nz_red: int, seed: int, red_seed: int | None = None) -> np.ndarray:
    """``(n, nz)`` standard normal codes; the first ``nz_red`` dims from ``red_seed`` when given."""
    import torch

    z = torch.randn(n, nz, generator=torch.Generator().manual_seed(seed))
    if red_seed is not None and nz_red:
        z[:, :nz_red] = torch.randn(n, nz, generator=torch.Generator().manual_seed(red_seed))[:, :nz_red]
    return z.numpy()


def shift_codes(codes: np.ndarray, vector: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """``codes + strength · vector`` (float32), latent arithmetic; a zero vector or strength changes nothing."""
    return (np.asarray(codes, np.float32) + np.float32(strength) * np.asarray(vector, np.float32)).astype(np.float32)


def render_red(generator, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The red (Bgs4) image (n, H, W), float32 in [-1, 1], of the first class for codes ``z``: through
    ``generate`` with that class only, so a star generator runs its red tower and one green tower."""
    import torch

    device = next(generator.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(z), batch_size):
            batch = torch.as_tensor(z[start : start + batch_size], device=device, dtype=torch.float32)
            first = torch.zeros((len(batch), 1), dtype=torch.long, device=device)
            out.append(generator.generate(batch, first)[:, 0, 0].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def render(generator, z: np.ndarray, batch_size: int = 256):
    """Generator output in pairs form (n, C, 2, H, W), float32 in [-1, 1], for codes ``z``."""
    import torch

    device = next(generator.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(z), batch_size):
            batch = torch.as_tensor(z[start : start + batch_size], device=device, dtype=torch.float32)
            out.append(generator(batch).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,))


RED = "Bgs4"  # the red channel's name; "Bgs4 (Sid2)" is Sid2's own red cell


def is_red_channel(name: str) -> bool:
    return name.startswith(RED)


def chosen_proteins(class_names: list[str], proteins=None) -> list[str]:
    chosen = list(class_names) if proteins is None else list(proteins)
    unknown = [p for p in chosen if p not in class_names]
    if unknown:
        raise ValueError(f"the model has no {unknown}; it knows {list(class_names)}")
    return chosen


def channel_names(class_names: list[str], proteins=None, shares_red: bool = True) -> list[str]:
    """Channel names of :func:`pairs_to_channels`: ``Bgs4, Sid2, Tea1`` or ``Bgs4 (Sid2), Sid2, Bgs4 (Tea1), Tea1``."""
    chosen = chosen_proteins(class_names, proteins)
    if shares_red or len(chosen) == 1:
        return [RED, *chosen]
    return [name for protein in chosen for name in (f"{RED} ({protein})", protein)]


def pairs_to_channels(pairs: np.ndarray, class_names: list[str], proteins=None, shares_red: bool = True):
    """Pairs (n, C, 2, H, W) -> (channels, names) for the chosen proteins.

    When the model's proteins share one red cell (star, projection, multichannel): the red Bgs4
    channel, then one green per protein, (n, 1 + c, H, W). When each protein has its own red cell
    (one-class, cGAN): each protein's red before its green, (n, 2c, H, W), so no green is ever
    shown on a red cell it was not generated with.
    """
    chosen = chosen_proteins(class_names, proteins)
    idx = [class_names.index(p) for p in chosen]
    if shares_red or len(idx) == 1:
        channels = np.concatenate([pairs[:, idx[:1], 0], pairs[:, idx, 1]], axis=1)
    else:
        channels = pairs[:, idx].reshape(len(pairs), 2 * len(idx), *pairs.shape[-2:])
    return channels, channel_names(class_names, chosen, shares_red)


def sample(generator, meta: dict, n: int, seed: int = 0, proteins=None, red_seed: int | None = None,
           z: np.ndarray | None = None, attribute: tuple[str, np.ndarray, float] | None = None) -> Samples:
    """``n`` cells from ``generator`` (in eval mode) with the model card ``meta``.

    ``attribute`` = (name, vector, strength) moves every code by ``strength · vector`` (latent
    arithmetic, :func:`shift_codes`; :mod:`napari_biogans.evaluation.profiling` finds vectors); the
    codes returned are the moved ones.
    """
    if z is None:
        z = latent_codes(n, generator.nz, generator.nz_red, seed, red_seed)
    if attribute is not None:
        z = shift_codes(z, attribute[1], attribute[2])
    pairs = render(generator, z)
    channels, names = pairs_to_channels(pairs, meta["class_names"], proteins, generator.shares_red)
    provenance = {
        "model": meta.get("name", "unnamed"),
        "weights_sha256": meta.get("sha256"),
        "seed": seed,
        "red_seed": red_seed,
        "n": n,
        "proteins": chosen_proteins(meta["class_names"], proteins),
        "simulated_training_data": meta.get("simulated_training_data", False),
    }
    if attribute is not None:
        provenance["attribute"] = {"name": attribute[0], "strength": float(attribute[2])}
    return Samples(
        images=to_uint8(channels),
        channel_names=names,
        z=np.asarray(z, dtype=np.float32),
        provenance=provenance,
    )


SIMULATED_NOTE = "generated by a model trained on SIMULATED cells, not on real LIN data"


def write_samples(samples: Samples, path, stack_axis: str = "cell") -> None:
    """OME-TIFF (``.tif``) or OME-Zarr (``.ome.zarr``) ``(n, channels, H, W)`` along T with the channel
    names, the LIN pixel size and the provenance (:mod:`napari_biogans.ome`), or HDF5 with the codes too.

    ``stack_axis`` says what the first axis holds ("cell", or "frame" for an interpolation). Every format
    records ``simulated_training_data`` (and, when true, :data:`SIMULATED_NOTE`) beside the provenance,
    so a file made from simulated cells says so wherever it is opened.
    """
    import json
    from pathlib import Path

    from . import ome
    from .atomic import atomic_write
    from .data.simulator import pixel_size_um

    path = Path(path)
    suffix = path.suffix.lower()
    simulated = bool(samples.provenance.get("simulated_training_data", False))
    flags = {"simulated_training_data": simulated, **({"note": SIMULATED_NOTE} if simulated else {})}
    if suffix in (".tif", ".tiff") or ome.is_zarr_path(path):
        metadata = {"channel_names": samples.channel_names, "provenance": samples.provenance,
                    "stack_axis": stack_axis, **flags}
        ome.write(path, samples.images, "TCYX", samples.channel_names, pixel_size_um(samples.images.shape[-2:]),
                  metadata)
    elif suffix in (".h5", ".hdf5"):
        import h5py

        def write_h5(tmp):
            with h5py.File(tmp, "w") as f:
                f.create_dataset("samples", data=samples.images, compression="gzip")
                f.create_dataset("z", data=samples.z)
                f.attrs["channel_names"] = json.dumps(samples.channel_names)
                f.attrs["provenance"] = json.dumps(samples.provenance)
                f.attrs.update(flags)

        atomic_write(path, write_h5)
    else:
        raise ValueError(f"{path}: write samples to .tif (OME-TIFF), .ome.zarr or .h5")
