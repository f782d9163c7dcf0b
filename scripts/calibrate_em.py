"""The EM diagnostics' calibration tables at a chosen budget, as Markdown (docs/evaluation.md's EM section).

    python scripts/calibrate_em.py --data ../shared/data/vnc/stack1 --generated 10 --size 1024 --no-c2st
    python scripts/calibrate_em.py --data ../shared/data/vnc/stack1 --generated 4 --size 512 \\
        --c2st-steps 1000 --width 16 --batch-size 32

Label statistics: the validation sections (10-19) against real training maps (00-09) cut to the budget
(``--generated`` maps of ``--size``²) and against those maps shuffled, eroded and dilated. C2ST:
the odd training sections against the even ones, and blurred (σ = 1, 2) against them. The same
functions and thresholds as ``biogans evaluate em`` (evaluation/em_calibration.py); ``--bins`` and
``--radius`` (the χ²'s bins, the erosion / dilation) other than the product's measure what the χ² can see.
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="VNC stack1 folder")
    parser.add_argument("--generated", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--no-c2st", action="store_true")
    parser.add_argument("--c2st-steps", type=int, default=1000)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bins", type=int, default=None, help="χ² bins (default: the product's)")
    parser.add_argument("--radius", type=int, default=None,
                        help="px of erosion and of dilation (default: the product's, one for each)")
    args = parser.parse_args(argv)

    import torch

    from napari_biogans import jobs
    from napari_biogans.data.em import TRAIN_SECTIONS, VALIDATION_SECTIONS, read_sections
    from napari_biogans.evaluation import em_calibration as calibration
    from napari_biogans.evaluation import em_metrics
    from napari_biogans.evaluation.em_report import c2st_sections

    torch.set_num_threads(1)
    train_images, train_labels = read_sections(args.data, TRAIN_SECTIONS)
    val_images, val_labels = read_sections(args.data, VALIDATION_SECTIONS)
    bins = args.bins or em_metrics.CHI2_BINS
    real_maps = calibration.budget_sample(train_labels, args.generated, args.size, args.seed)
    reference = em_metrics.global_statistics(val_labels)
    counts = em_metrics.global_statistics(real_maps)
    spoiled = ", ".join(calibration.control_name(c, args.radius) for c in ("eroded", "dilated"))
    print(f"label statistics at {args.generated} maps of {args.size}² (seed {args.seed}), {bins} bins, {spoiled}; "
          "objects at this budget (validation): "
          + ", ".join(f"{key} {counts[key].size} ({reference[key].size})" for key in calibration.STATISTIC_CONTROLS)
          + "\n")
    print("| statistic | control | χ² | pass |\n|---|---|---:|---|")
    found = calibration.calibrate_statistics(reference, real_maps, bins, args.seed, args.radius)
    for key, row in found.items():
        for control, value in row["controls"].items():
            print(f"| {key} | {control} | {value['chi2']:.4g} | {'pass' if value['passed'] else '**FAIL**'} |")
        print(f"| {key} | **verdict** | | {'trusted' if row['trust']['trusted'] else '**untrusted**'} |")
    if args.no_c2st:
        return
    kwargs = dict(patch=64, steps=args.c2st_steps, batch_size=args.batch_size, width=args.width, device="cpu",
                  seed=args.seed)
    started = time.perf_counter()
    reference, control = c2st_sections(train_images)  # even and odd training sections, as `biogans evaluate em`
    real = jobs.run(em_metrics.c2st_realism(reference, control, **kwargs))["score"]
    found = jobs.run(calibration.calibrate_c2st(reference, control, real, **kwargs))
    print(f"\nC2ST at {args.c2st_steps} steps, width {args.width}, batch {args.batch_size} "
          f"({time.perf_counter() - started:.0f} s)\n")
    print("| control | score | pass |\n|---|---:|---|")
    for control, value in found["controls"].items():
        print(f"| {control} | {value['score']:.4g} | {'pass' if value['passed'] else '**FAIL**'} |")
    print(f"| **verdict** | | {'trusted' if found['trust']['trusted'] else '**untrusted**'} |")


if __name__ == "__main__":
    main()
