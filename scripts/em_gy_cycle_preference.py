"""Which label maps does DSGAN's generated-label cycle term reward? The G_y collapse study's mechanism check.

The term λ_cyc·λ_fake·BCE(F_y(G_x(ỹ)), ỹ) is low for label maps that G_x renders and F_y reads back
easily. This script trains a small segmenter on the real training sections (F_y's architecture and job),
renders label maps of several kinds with a model's G_x, segments them, and prints each kind's mean
per-pixel NLL of its own labels: the cycle loss that G_y would get for drawing such maps.

    python scripts/em_gy_cycle_preference.py --vnc VNC_STACK --model MODEL [--labels NAME=MODEL ...]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    import torch

    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vnc", required=True)
    p.add_argument("--model", required=True, help="EM model whose G_x renders every kind of label map")
    p.add_argument("--labels", nargs="*", default=[], metavar="NAME=MODEL", help="label generators to compare")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--segmenter-iterations", type=int, default=200)
    args = p.parse_args()

    from napari_biogans.data import em
    from napari_biogans.evaluation.em_metrics import segment, train_segmenter
    from napari_biogans.jobs import run
    from napari_biogans.models.em_inference import load_em_model
    from napari_biogans.rendering import render_tiled

    images, labels = em.read_sections(args.vnc, range(10))
    segmenter = run(train_segmenter(images, labels, args.segmenter_iterations, width=16), lambda u: None)
    renderer = load_em_model(args.model).image_generator
    val_images, val_labels = em.read_sections(args.vnc, range(10, 20))
    kinds = {"real": em.random_crops(val_images, val_labels, args.size, args.n, np.random.default_rng(0),
                                     augment=False)[1]}
    for item in args.labels:
        name, path = item.split("=", 1)
        model = load_em_model(path)
        kinds[name] = np.stack([model.sample_labels(args.size, args.size, seed=s) for s in range(args.n)])
    result = {}
    for name, maps in kinds.items():
        rendered = np.stack([render_tiled(renderer, m, noise_seed=i) for i, m in enumerate(maps)])
        probs = segment(segmenter, rendered)
        p_true = np.take_along_axis(probs, maps[:, None].astype(np.int64), 1)[:, 0]
        result[name] = {"cycle_nll": round(float(-np.log(np.clip(p_true, 1e-12, 1)).mean()), 4),
                        "pixel_accuracy": round(float((probs.argmax(1) == maps).mean()), 4)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
