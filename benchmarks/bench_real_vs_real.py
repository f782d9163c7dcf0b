"""Real vs real on a CPU: wall time, CPU time and peak memory of ``biogans evaluate real-vs-real``.

    OMP_NUM_THREADS=2 python benchmarks/bench_real_vs_real.py            # 8 proteins x 200 cells, CPU defaults
    python benchmarks/bench_real_vs_real.py --proteins Arp3,Fim1,Tea1,Tea4 --steps 200
    python benchmarks/bench_real_vs_real.py --plans                       # memory plans, 8 and 41 proteins, 24 GB
    python benchmarks/bench_real_vs_real.py --memory                      # estimated vs measured bytes per critic

Simulates the cells (``--cells`` per protein), runs the evaluation pipeline's real-vs-real job
with the CPU defaults (``pipeline.cpu_real_vs_real``) unless told otherwise, and prints a
markdown table: wall seconds, CPU seconds (user + system, so a loaded machine shows), peak
resident memory (``ru_maxrss``), the critic plan, the mean score matrix, and whether the
similar pairs (Arp3/Fim1 and Tea1/Tea4: the simulator draws them alike) score below every
dissimilar pair.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np

SIMILAR = {frozenset(("Arp3", "Fim1")), frozenset(("Tea1", "Tea4"))}
LIN_PROTEINS = 41


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def separation(names, mean):
    """(largest similar-pair score, smallest dissimilar-pair score), both directions of each pair."""
    similar, dissimilar = [], []
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j:
                (similar if frozenset((a, b)) in SIMILAR else dissimilar).append(mean[i, j])
    return (max(similar) if similar else np.nan), (min(dissimilar) if dissimilar else np.nan)


def plans(args) -> None:
    """The memory plans of 8 and 41 proteins at the CPU and the paper's (GPU) settings, for a 24 GB budget."""
    from napari_biogans.evaluation import c2st
    from napari_biogans.evaluation.pipeline import C2STSettings, cpu_real_vs_real

    cells_bytes = 2 * 48 * 80 * 200  # 200 uint8 cells per protein
    print("| proteins | settings | critics | plan for 24 GB |")
    print("|---:|---|---:|---|")
    for label, settings, path in (("CPU defaults", cpu_real_vs_real(C2STSettings()), "loop"),
                                  ("paper (GPU)", C2STSettings(), "grouped")):
        for n in (8, LIN_PROTEINS):
            plan = c2st.plan_critics(settings.splits * n * n, (48, 80), settings.width, settings.batch_size,
                                     settings.algorithm, memory_gb=24, data_bytes=n * cells_bytes, path=path)
            print(f"| {n} | {label}: {settings.splits} split(s), width {settings.width}, batch {settings.batch_size} "
                  f"| {plan.critics:,} | {plan.describe()} |")


def one_group(args) -> None:
    """Child process of --memory: ``--group`` critics for 3 steps; prints the peak RSS in bytes."""
    import torch

    from napari_biogans import jobs
    from napari_biogans.evaluation import c2st

    torch.set_num_threads(1)

    def draw(b, _rng, ids):
        x = torch.rand(b, len(ids), 2, 48, 80)
        return x, x.flip(-1)

    plan = c2st.CriticPlan(args.group, args.group, 0, 0, 0, args.path)
    jobs.run(c2st.train_and_score(draw, draw, args.group, steps=3, batch_size=args.batch_size, test_batches=1,
                                  width=args.width, plan=plan))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def memory(args) -> None:
    """Bytes per critic: the planner's estimate against the growth of peak RSS from 1 to 1 + k critics."""
    from napari_biogans.evaluation import c2st

    print("| width | batch | path | estimated MB per critic | measured MB per critic |")
    print("|---:|---:|---|---:|---:|")
    for width in (16, 64):
        k = 8 if width == 16 else 2
        rss = {}
        for group in (1, 1 + k):
            out = subprocess.run([sys.executable, __file__, "--group", str(group), "--width", str(width),
                                  "--batch-size", str(args.batch_size or 64), "--path", args.path],
                                 capture_output=True, text=True, check=True).stdout
            rss[group] = int(out.split()[-1])
        measured = (rss[1 + k] - rss[1]) / k
        estimated = c2st.critic_bytes((48, 80), width, args.batch_size or 64)
        print(f"| {width} | {args.batch_size or 64} | {args.path} | {estimated / 1e6:.0f} | {measured / 1e6:.0f} |")


def run(args) -> None:
    import torch

    from napari_biogans import jobs
    from napari_biogans.data.simulator import PROTEINS, simulate_stack
    from napari_biogans.evaluation import pipeline

    names = args.proteins.split(",") if args.proteins else list(PROTEINS)
    cells = simulate_stack(n_per_class=args.cells, proteins=names, seed=0)
    settings = pipeline.cpu_real_vs_real(pipeline.C2STSettings(memory_gb=args.memory_gb))
    given = {k: getattr(args, k) for k in ("steps", "splits", "width", "batch_size", "lr")}
    settings = replace(settings, **{k: v for k, v in given.items() if v is not None})
    device = torch.device("cpu")
    plan = pipeline.real_vs_real_plan(cells, settings, device)
    load = os.getloadavg()[0]
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    logged = {"done": 0}

    def progress(update):  # to stderr, so a run stopped early still tells its pace
        if update.total and update.done * 20 // update.total > logged["done"] * 20 // update.total:
            logged["done"] = update.done
            print(f"{update.done}/{update.total} group steps, {time.perf_counter() - start_wall:.0f} s wall, "
                  f"{cpu_seconds() - start_cpu:.0f} s CPU", file=sys.stderr, flush=True)

    result = jobs.run(pipeline.real_vs_real_job(cells, settings, device, plan=plan), progress)
    wall, cpu = time.perf_counter() - start_wall, cpu_seconds() - start_cpu
    mean = result.mean
    worst_similar, best_dissimilar = separation(result.names, mean)
    print(f"\n{len(names)} proteins x {args.cells} cells (simulated), {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} cores, load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end\n")
    print("| proteins x cells | steps | splits | width | batch | critic plan | wall s | CPU s | peak RSS GB "
          "| largest similar | smallest dissimilar | separates |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
    print(f"| {len(names)} x {args.cells} | {settings.steps} | {settings.splits} | {settings.width} | "
          f"{settings.batch_size} | {plan.describe()} | {wall:.0f} | {cpu:.0f} | {peak_rss_gb():.2f} | "
          f"{worst_similar:.3f} | {best_dissimilar:.3f} | {'yes' if worst_similar < best_dissimilar else 'NO'} |")
    print("\nmean score, rows set A, columns set B\n")
    print("| | " + " | ".join(result.names) + " |")
    print("|---|" + "---:|" * len(result.names))
    for name, row in zip(result.names, mean):
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + " |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proteins", default=None, help="comma-separated (default: the simulator's eight)")
    parser.add_argument("--cells", type=int, default=200, help="simulated cells per protein")
    for flag in ("--steps", "--splits", "--width", "--batch-size"):
        parser.add_argument(flag, type=int, default=None, help="default: the CPU default")
    parser.add_argument("--lr", type=float, default=None, help="critic learning rate (default: the CPU default)")
    parser.add_argument("--memory-gb", type=float, default=None)
    parser.add_argument("--plans", action="store_true", help="print the memory plans only")
    parser.add_argument("--memory", action="store_true", help="estimated vs measured memory per critic")
    parser.add_argument("--path", default="loop", choices=["loop", "grouped"], help="--memory: the critic path")
    parser.add_argument("--group", type=int, default=None, help=argparse.SUPPRESS)  # --memory's child
    args = parser.parse_args(argv)
    if args.group:
        one_group(args)
    elif args.plans:
        plans(args)
    elif args.memory:
        memory(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
