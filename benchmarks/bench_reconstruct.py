"""Reconstruction through one tower against the former path through every tower, same cells, one run.

    python benchmarks/bench_reconstruct.py                          # shipped star-6, 96 cells, CPU, 1 thread
    python benchmarks/bench_reconstruct.py --cells 24 --threads 2 --iterations 20

The product (``evaluation.reconstruction.reconstruct``) renders each cell through its own
protein's tower only (the red tower once per row). The former path, kept here alone as the
reference, rendered every protein's tower with the grouped convolutions and picked the cell's
protein. Both optimise the same cells from the same starting codes (same restarts, same L-BFGS
iterations); the table gives seconds per cell and the median final L2 both ways.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_biogans import checkpoints, jobs
from napari_biogans.data.simulator import simulate_stack
from napari_biogans.devices import describe_device, resolve_device
from napari_biogans.evaluation.reconstruction import batched_lbfgs, l2_error, reconstruct


def every_tower(generator, cells, slots, restarts, iterations, seed, device):
    """The former path: G(z) for every protein, then the cell's protein; best restart's L2 per cell."""
    generator.execution = "grouped"
    n = len(cells)
    target = torch.as_tensor(cells, device=device).repeat(restarts, 1, 1, 1)
    slot = torch.as_tensor(slots, device=device).repeat(restarts)
    rows = torch.arange(n * restarts, device=device)
    z0 = torch.randn(n * restarts, generator.nz, generator=torch.Generator(device).manual_seed(seed), device=device)

    def loss(z):
        return ((generator(z)[rows, slot] - target) ** 2).flatten(1).mean(1)

    z = jobs.run(batched_lbfgs(loss, z0, iterations=iterations))
    with torch.no_grad():
        images = generator(z)[rows, slot].cpu().numpy()
    generator.execution = "auto"
    return l2_error(images, target.cpu().numpy()).reshape(restarts, n).min(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="star-6", help="catalogue name or model file of a star generator")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cells", type=int, default=96, help="simulated cells, spread over the model's proteins")
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20, help="L-BFGS iterations (the product's default: 1000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each path, alternating; the best counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    generator, meta = checkpoints.load_generator(checkpoints.resolve_model(args.model), device)
    generator.eval()
    for p in generator.parameters():
        p.requires_grad_(False)
    names = meta["class_names"]
    per_class = -(-args.cells // len(names))
    stack = simulate_stack(per_class, proteins=names, seed=0)
    rows = np.random.default_rng(0).choice(len(stack), args.cells, replace=False)
    cells, slots = stack.as_float()[rows], stack.class_index[rows]

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(run):
        sync()
        start = time.perf_counter()
        result = run()
        sync()
        return time.perf_counter() - start, result

    every_tower(generator, cells[:2], slots[:2], 1, 2, 0, device)  # warm-up: first calls allocate
    jobs.run(reconstruct(generator, cells[:2], slots[:2], restarts=1, steps=1, inner=2, device=device))
    old_times, new_times = [], []
    for _ in range(args.rounds):  # alternating, best of each: robust to other work on a shared machine
        seconds, old_l2 = timed(lambda: every_tower(generator, cells, slots, args.restarts, args.iterations, 0,
                                                    device))
        old_times.append(seconds)
        seconds, new = timed(lambda: jobs.run(reconstruct(generator, cells, slots, restarts=args.restarts, steps=1,
                                                          inner=args.iterations, seed=0, device=device)))
        new_times.append(seconds)
    old_seconds, new_seconds = min(old_times), min(new_times)

    print(f"\n{describe_device(device)}, torch {torch.__version__}, {args.threads} thread(s); {args.model} "
          f"(width {generator.config['width']}, {len(names)} proteins); {args.cells} simulated cells x "
          f"{args.restarts} restarts x {args.iterations} L-BFGS iterations; best of {args.rounds} alternating runs\n")
    print("| path | seconds per cell | median final L2 |")
    print("|---|---:|---:|")
    print(f"| every tower, grouped convolutions (former) | {old_seconds / args.cells:.3f} | {np.median(old_l2):.5f} |")
    print(f"| own protein's tower only (product) | {new_seconds / args.cells:.3f} | {np.median(new.l2):.5f} |")
    print(f"| speed-up | {old_seconds / new_seconds:.1f}x | largest per-cell L2 difference "
          f"{np.abs(old_l2 - new.l2).max():.1e} |")


if __name__ == "__main__":
    main()
