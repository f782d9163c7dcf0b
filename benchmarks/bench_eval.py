"""Evaluation speed: C2ST critics as grouped convolutions vs a per-critic loop, and reconstruction throughput.

    python benchmarks/bench_eval.py                       # CPU: widths 16 and 64, 1 and 2 threads
    python benchmarks/bench_eval.py --device cuda --widths 64 --batch-size 64 --steps 50 --cells 256

Prints a markdown table. C2ST rows time ``--steps`` critic steps (WGAN-GP) of ``--splits``
critics on simulated cells, once with grouped convolutions (one pass for all critics) and once
with a loop of plain convolutions over the critics (the same weights); the faster is what
``c2st.fastest_path`` picks for the device. Each time is the best of ``--repeats`` runs (a shared
machine's noise only ever adds). Reconstruction rows time batched L-BFGS over ``--cells`` cells
x 5 restarts for ``--inner`` inner iterations with a star-shaped generator (6 proteins) and
report cells per second.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from napari_biogans import jobs
from napari_biogans.data.simulator import simulate_stack
from napari_biogans.devices import describe_device, resolve_device
from napari_biogans.evaluation import c2st
from napari_biogans.evaluation.reconstruction import reconstruct
from napari_biogans.models import make_models


def timed(fn, device):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def critic_rows(args, device, images) -> list[str]:
    """One row per (threads, width, path): ms per step of ``args.splits`` critics, and the loop's speed-up."""
    rows = []

    def draw(b, rng, ids):
        idx = torch.randint(len(images), (b, len(ids)), device=device, generator=rng)
        real = images[idx]
        return real, real.flip(-1) * 0.9

    for threads in args.threads if device.type == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        for width in args.widths:
            seconds = {}
            for path in c2st.PATHS:
                plan = c2st.CriticPlan(args.splits, args.splits, 0, 0, 0, path)

                def once():
                    jobs.run(c2st.train_and_score(draw, draw, args.splits, image_size=images.shape[-2:],
                                                  steps=args.steps, batch_size=args.batch_size, test_batches=1,
                                                  width=width, device=device, plan=plan))

                once()  # warm-up: first-call allocations and kernel choices
                seconds[path] = min(timed(once, device) for _ in range(args.repeats))
            for path in c2st.PATHS:
                per_step = seconds[path] / args.steps
                rows.append(f"| C2ST, {args.splits} critics, {path} | width {width}, batch {args.batch_size}, "
                            f"{threads} thread(s) | {seconds[path]:.2f} | {per_step * 1000:.0f} ms/step |")
            rows.append(f"| loop vs grouped | width {width}, {threads} thread(s) | | "
                        f"{seconds['grouped'] / seconds['loop']:.2f}x (> 1: the loop is faster) |")
            print("\n".join(rows[-3:]), file=sys.stderr, flush=True)  # a run stopped early keeps its rows
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64], help="critic widths (64 = paper)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU threads")
    parser.add_argument("--width", type=int, default=16, help="generator width of the reconstruction rows")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--cells", type=int, default=32)
    parser.add_argument("--inner", type=int, default=40, help="L-BFGS inner iterations (reference: 1000)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    stack = simulate_stack(n_per_class=64, proteins=["Tea1"], seed=0)
    images = torch.as_tensor(stack.as_float(), device=device)
    rows = critic_rows(args, device, images)

    torch.manual_seed(0)
    G, _ = make_models("star", n_classes=6, width=args.width, critic_bn=False)
    cells = np.take(stack.as_float(), np.arange(args.cells) % len(stack), axis=0)  # --cells, even past the stack
    slots = np.zeros(args.cells, dtype=int)
    seconds = timed(lambda: jobs.run(reconstruct(G, cells, slots, restarts=5, steps=1, inner=args.inner, device=device)),
                    device)

    print(f"\n{describe_device(device)}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads\n")
    print("| measurement | setting | seconds | per unit |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print(f"| reconstruction, star G (6 proteins) | width {args.width}, {args.cells} cells x 5 restarts, "
          f"{args.inner} L-BFGS iterations | {seconds:.2f} | {args.cells / seconds:.2f} cells/s "
          f"({args.cells * 5 * args.inner / seconds:.0f} code-iterations/s) |")


if __name__ == "__main__":
    main()
