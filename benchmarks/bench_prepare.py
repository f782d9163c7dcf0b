"""Prepare cells speed: one 2048 x 2048 two-channel 16-bit field of ~200 simulated cells.

    python benchmarks/bench_prepare.py
    python benchmarks/bench_prepare.py --side 2048 --cells 220 --repeats 3
    python benchmarks/bench_prepare.py --accuracy 20    # the targets, over 20 simulated 512 x 512 fields

Prints a markdown table: seconds to prepare the field (segmentation, measuring, alignment,
cropping and normalisation; reading excluded) with the built-in segmentation and with given
labels, on one CPU core (BLAS / OpenMP threads set to 1 before numpy loads). Target: < 10 s.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from napari_biogans import jobs  # noqa: E402
from napari_biogans.data import fields, prepare, simulator  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048, help="field side in pixels (100 nm each)")
    parser.add_argument("--cells", type=int, default=220, help="cells drawn (a few fall off the field)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accuracy", type=int, default=0, metavar="FIELDS",
                        help="instead: measure the accuracy targets over this many 512 x 512 fields")
    args = parser.parse_args(argv)
    if args.accuracy:
        accuracy(args.accuracy)
        return

    sim = simulator.simulate_field(seed=0, shape=(args.side, args.side), n_cells=args.cells, bit_depth=16)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    machine = platform.processor() or platform.machine()
    print(f"prepare cells, {args.side} x {args.side} x 2 {sim.image.dtype}, {len(sim.cells)} cells; {machine}, "
          f"{os.cpu_count()} cores, 1 used, load average {load:.1f}\n")
    print("| cells from | cells found | accepted | best of {0} (s) | median (s) |".format(args.repeats))
    print("|---|---:|---:|---:|---:|")
    for name, labels in (("built-in segmentation", None), ("given labels", sim.labels)):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fov = fields.field_from_arrays(sim.image[0], sim.image[1], "bench", sim.pixel_size_um, labels=labels)
            result = jobs.run(prepare.prepare_field(fov))
            times.append(time.perf_counter() - start)
        times.sort()
        print(f"| {name} | {len(result.records)} | {len(result.accepted)} | {times[0]:.2f} | "
              f"{times[len(times) // 2]:.2f} |")


def _corr(a, b) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def accuracy(n_fields: int) -> None:
    """The issue's targets on simulated fields (14 cells drawn each, 30% placed touching another)."""
    angle, length, corr = [], [], []
    isolated = found = merged = accepted_total = 0
    for seed in range(n_fields):
        sim = simulator.simulate_field(seed=seed, n_cells=14)
        truth = sim.truth
        fov = fields.field_from_arrays(sim.image[0], sim.image[1], "sim", 0.1, labels=sim.labels)
        given = jobs.run(prepare.prepare_field(fov))
        for i, record in enumerate(given.accepted):
            k = record.label - 1
            angle.append(abs((record.angle_deg - truth["angle_deg"][k] + 90) % 180 - 90))
            length.append(abs(record.length_um / truth["length_um"][k] - 1))
            crop = given.float_crops[i].copy()
            inside = crop[0] > 0
            crop[0][inside] -= record.low_red
            crop[1][inside] -= record.low_green
            ref = simulator.render_aligned(sim.cells[k])
            corr.append(max(_corr(crop, ref), _corr(crop, ref[:, ::-1, ::-1])))
        missed = int((~truth["touches_border"]).sum()) - len(given.accepted)
        fov.labels = None
        seg = jobs.run(prepare.prepare_field(fov))
        masks = [seg.labels == r.label for r in seg.accepted]
        accepted_total += len(masks)
        areas = np.bincount(sim.labels.ravel())
        for k in range(len(sim.cells)):
            if not truth["touches_border"][k] and truth["gap_um"][k] >= 1.0:
                isolated += 1
                cell = sim.labels == k + 1
                found += any((m & cell).sum() / (m | cell).sum() > 0.7 for m in masks)
        for m in masks:
            ids, counts = np.unique(sim.labels[m], return_counts=True)
            merged += sum(1 for i, c in zip(ids, counts) if i > 0 and c > 0.2 * areas[i]) > 1
    print(f"{n_fields} simulated fields, 512 x 512 at 0.1 µm, 16-bit\n")
    print("| target | measured | cells |")
    print("|---|---:|---:|")
    print(f"| given labels: inner cells not cropped (0) | {missed} | {len(angle)} cropped |")
    print(f"| median angle error < 2° | {np.median(angle):.2f}° (95th pct {np.percentile(angle, 95):.2f}°) "
          f"| {len(angle)} |")
    print(f"| median length error < 3% | {100 * np.median(length):.2f}% (95th pct "
          f"{100 * np.percentile(length, 95):.2f}%) | {len(length)} |")
    print(f"| r with the simulator's rendering >= 0.9 | min {min(corr):.3f}, median {np.median(corr):.3f} "
          f"| {len(corr)} |")
    print(f"| segmentation: isolated cells found >= 95% | {100 * found / isolated:.1f}% | {isolated} |")
    print(f"| segmentation: accepted crops holding two cells (0) | {merged} | {accepted_total} accepted |")


if __name__ == "__main__":
    main()
