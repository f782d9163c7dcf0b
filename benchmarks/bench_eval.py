"""Evaluation speed: ten C2ST critics trained together vs one after another, and reconstruction throughput.

    python benchmarks/bench_eval.py                       # CPU-sized defaults
    python benchmarks/bench_eval.py --device cuda --width 64 --batch-size 64 --steps 50 --cells 256

Prints a markdown table. C2ST rows time ``--steps`` critic steps (WGAN-GP) of ten critics on
simulated cells; the per-step time extrapolates to the reference's 5000 steps. Reconstruction
rows time batched L-BFGS over ``--cells`` cells x 5 restarts for ``--inner`` inner iterations
with a star-shaped generator (6 proteins) and report cells per second.
"""

from __future__ import annotations

import argparse
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--width", type=int, default=16, help="critic and generator width (64 = paper)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--cells", type=int, default=32)
    parser.add_argument("--inner", type=int, default=40, help="L-BFGS inner iterations (reference: 1000)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    stack = simulate_stack(n_per_class=64, proteins=["Tea1"], seed=0)
    images = torch.as_tensor(stack.as_float(), device=device)
    gen = torch.Generator(device).manual_seed(0)

    def draw(groups):
        def fn(b):
            idx = torch.randint(len(images), (b, groups), device=device, generator=gen)
            real = images[idx]
            return real, real.flip(-1) * 0.9
        return fn

    common = dict(image_size=stack.image_size, steps=args.steps, batch_size=args.batch_size, test_batches=1,
                  width=args.width, device=device)
    batched = timed(lambda: jobs.run(c2st.train_and_score(draw(args.splits), draw(args.splits), groups=args.splits,
                                                          **common)), device)
    sequential = timed(lambda: [jobs.run(c2st.train_and_score(draw(1), draw(1), groups=1, **common)) for _ in range(args.splits)],
                       device)

    torch.manual_seed(0)
    G, _ = make_models("star", n_classes=6, width=args.width, critic_bn=False)
    cells = np.take(stack.as_float(), np.arange(args.cells) % len(stack), axis=0)  # --cells, even past the stack
    slots = np.zeros(args.cells, dtype=int)
    seconds = timed(lambda: jobs.run(reconstruct(G, cells, slots, restarts=5, steps=1, inner=args.inner, device=device)),
                    device)

    print(f"\n{describe_device(device)}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads\n")
    print("| measurement | setting | seconds | per unit |")
    print("|---|---|---|---|")
    per_step_b, per_step_s = batched / args.steps, sequential / args.steps
    print(f"| C2ST, {args.splits} critics together (grouped convolutions) | width {args.width}, batch {args.batch_size}, "
          f"{args.steps} steps | {batched:.2f} | {per_step_b * 1000:.0f} ms/step → {per_step_b * 5000 / 60:.1f} min for 5000 |")
    print(f"| C2ST, {args.splits} critics one after another | same | {sequential:.2f} | {per_step_s * 1000:.0f} ms/step "
          f"→ {per_step_s * 5000 / 60:.1f} min for 5000 |")
    print(f"| speed-up of batching | | | {sequential / batched:.2f}x |")
    print(f"| reconstruction, star G (6 proteins) | width {args.width}, {args.cells} cells x 5 restarts, "
          f"{args.inner} L-BFGS iterations | {seconds:.2f} | {args.cells / seconds:.2f} cells/s "
          f"({args.cells * 5 * args.inner / seconds:.0f} code-iterations/s) |")


if __name__ == "__main__":
    main()
