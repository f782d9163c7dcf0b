"""How a label generator's maps compare with real VNC label maps: the measures of the G_y collapse study.

    python scripts/em_label_diagnostics.py MODEL.safetensors [MODEL ...] --vnc VNC_STACK [--n 16 --size 512]
        [--montage OUT.png]

Prints one JSON object per model: the label statistics' means and χ² against the validation sections
(``evaluation.em_metrics.compare_statistics``), diversity (mean pairwise 1 − IU of binarised maps, generated
against real crops of the same size), how much of G_y's output varies with its noise, and the lattice
score (autocorrelation of the membrane mask at a lag of one noise pixel, G_y's factor × down-sampling,
where a collapsed G_y repeats its motif). ``--montage`` draws each model's first four maps in a row and
real validation crops in the last row (black cytoplasm, blue membrane, orange mitochondria).
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def lattice_autocorrelation(maps: np.ndarray, lag: int) -> float:
    """Mean normalised autocorrelation of the membrane masks at (0, lag) and (lag, 0)."""
    masks = (maps == 1).astype(np.float64)
    masks -= masks.mean((1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(masks)) ** 2
    ac = np.fft.ifft2(power).real.mean(0)
    ac /= ac[0, 0]
    return float((ac[0, lag] + ac[lag, 0]) / 2)


def diversity(maps: np.ndarray) -> float:
    """Mean pairwise 1 − IU of the binarised maps (em_metrics' birthday measure)."""
    from napari_biogans.evaluation.em_metrics import binarise, pairwise_iu

    iu = pairwise_iu(binarise(maps))
    return float(1 - iu[np.triu_indices(len(maps), 1)].mean())


def noise_share(label_generator, side: int, draws: int = 8) -> float:
    """Share of the output's variance that comes from the noise (variance across draws / total)."""
    import torch

    g = label_generator.float().eval()
    z = torch.randn((draws, *g.noise_shape(side, side)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = g(z)
    return float(out.var(0).mean() / out.var((0, 2, 3)).mean())


def real_crops(vnc, sections, n: int, size: int, seed: int = 0) -> np.ndarray:
    from napari_biogans.data import em

    images, labels = em.read_sections(vnc, sections)
    return em.random_crops(images, labels, size, n, np.random.default_rng(seed), augment=False)[1]


COLOURS = np.array([[0, 0, 0], [60, 140, 255], [255, 140, 30]], np.uint8)


def write_montage(rows: list[np.ndarray], path, per_row: int = 4, scale: int = 2) -> None:
    """Rows of label maps as colours, down-sampled by ``scale``, with white gaps."""
    import imageio.v3 as iio

    def tile(m):
        return np.pad(COLOURS[m[::scale, ::scale]], ((3, 3), (3, 3), (0, 0)), constant_values=255)

    iio.imwrite(path, np.concatenate([np.concatenate([tile(m) for m in row[:per_row]], 1) for row in rows], 0))


def sample_maps(model_path, n: int, size: int) -> np.ndarray:
    from napari_biogans.models.em_inference import load_em_model

    model = load_em_model(model_path)
    return np.stack([model.sample_labels(size, size, seed=s) for s in range(n)])


def measure(model_path, vnc, n: int = 16, size: int = 512, real: np.ndarray | None = None,
            fake: np.ndarray | None = None) -> dict:
    from napari_biogans.evaluation.em_metrics import compare_statistics
    from napari_biogans.models.em_inference import load_em_model

    model = load_em_model(model_path)
    fake = sample_maps(model_path, n, size) if fake is None else fake
    real = real_crops(vnc, range(10, 20), n, size) if real is None else real
    lag = model.label_generator.factor * model.label_downsample
    stats = compare_statistics(real, fake)
    return {
        "model": str(model_path),
        "iterations": model.meta.get("iterations"),
        "statistics": {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in stats.items()},
        "diversity": {"generated": round(diversity(fake), 4), "real": round(diversity(real), 4)},
        "lattice_autocorrelation": {"lag": lag, "generated": round(lattice_autocorrelation(fake, lag), 4),
                                    "real": round(lattice_autocorrelation(real, lag), 4)},
        "noise_share": round(noise_share(model.label_generator, size // model.label_downsample), 4),
        "membrane_fraction": {"generated": round(float((fake == 1).mean()), 4),
                              "real": round(float((real == 1).mean()), 4)},
    }


def main() -> None:
    import torch

    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--vnc", required=True, help="VNC stack folder (validation sections 10-19 are the real side)")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--montage", default=None, help="PNG: each model's maps in a row, real crops last")
    args = p.parse_args()
    real = real_crops(args.vnc, range(10, 20), args.n, args.size)
    rows = []
    for path in args.models:
        fake = sample_maps(path, args.n, args.size)
        rows.append(fake)
        print(json.dumps(measure(path, args.vnc, args.n, args.size, real, fake)), flush=True)
    if args.montage:
        write_montage(rows + [real], args.montage)


if __name__ == "__main__":
    main()
