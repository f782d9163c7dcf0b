"""The thesis's sanity check of FID with a LIN classifier, on the simulator's eight proteins.

    python scripts/fid_sanity.py [--cells 200] [--iterations 600] [--device cpu]

Trains the protein classifier on one simulated split, then prints (markdown) the FID between
every protein of that split and every protein of a second split: intra-class values (the
diagonal) should sit well below inter-class ones, and similar proteins near each other. Also
prints the leave-one-out 1-NN protein accuracy of raw pixels and of the classifier's features.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_biogans import jobs
from napari_biogans.data.simulator import PROTEINS, simulate_stack
from napari_biogans.devices import describe_device, resolve_device
from napari_biogans.evaluation import fid, profiling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200, help="cells per protein in each split")
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    start = time.perf_counter()
    train, test = simulate_stack(args.cells, seed=11), simulate_stack(args.cells, seed=12)
    classifier = jobs.run(fid.train_classifier(train, test, iterations=args.iterations, width=args.width, device=device))
    matrix = fid.class_fid_matrix(classifier, train, test)
    names = list(PROTEINS)
    print(f"{args.cells} simulated cells per protein per split, classifier width {args.width}, {args.iterations} "
          f"iterations on {describe_device(device)}: held-out accuracy {classifier.accuracy:.1%}\n")
    print("| FID: split A \\ split B | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for i, name in enumerate(names):
        cells = [f"**{v:.2f}**" if i == j else f"{v:.2f}" for j, v in enumerate(matrix[i])]
        print(f"| {name} | " + " | ".join(cells) + " |")
    off = matrix[~np.eye(len(names), dtype=bool)]
    print(f"\nintra-class (diagonal) median {np.median(np.diag(matrix)):.2f}, inter-class median {np.median(off):.2f}")
    for a, b in (("Arp3", "Fim1"), ("Tea1", "Tea4")):
        i, j = names.index(a), names.index(b)
        closer = [names[k] for k in range(len(names)) if k not in (i, j) and matrix[i, k] < matrix[i, j]]
        print(f"{a} vs {b}: FID {matrix[i, j]:.2f}; proteins closer to {a}: {', '.join(closer) or 'none'}")
    pixels = profiling.loo_1nn_accuracy(test.images.reshape(len(test), -1).astype(np.float64), test.class_index)
    features = profiling.loo_1nn_accuracy(fid.classifier_features(classifier, test.images), test.class_index)
    print(f"\n1-NN leave-one-out protein accuracy on split B: raw pixels {pixels:.1%}, classifier features "
          f"{features:.1%}\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
