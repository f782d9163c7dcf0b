"""How a label generator's maps compare with real VNC label maps: the measures of the G_y collapse study.

    python scripts/em_label_diagnostics.py MODEL.safetensors --vnc VNC_STACK [--n 16 --size 512]

Prints one JSON object: the label statistics' means and χ² against the validation sections
(``evaluation.em_metrics.compare_statistics``), diversity (mean pairwise 1 − IU of binarised maps, generated
against real crops of the same size), how much of G_y's output varies with its noise, and the lattice
score (autocorrelation of the membrane mask at a lag of one noise pixel, G_y's factor × down-sampling,
where a collapsed G_y repeats its motif).
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


def measure(model_path, vnc, n: int = 16, size: int = 512, real: np.ndarray | None = None) -> dict:
    from napari_biogans.evaluation.em_metrics import compare_statistics
    from napari_biogans.models.em_inference import load_em_model

    model = load_em_model(model_path)
    fake = np.stack([model.sample_labels(size, size, seed=s) for s in range(n)])
    real = real_crops(vnc, range(10, 20), n, size) if real is None else real
    lag = model.label_generator.factor * model.label_downsample
    stats = compare_statistics(real, fake)
    return {
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
    p.add_argument("model")
    p.add_argument("--vnc", required=True, help="VNC stack folder (validation sections 10-19 are the real side)")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    args = p.parse_args()
    print(json.dumps(measure(args.model, args.vnc, args.n, args.size), indent=1))


if __name__ == "__main__":
    main()
