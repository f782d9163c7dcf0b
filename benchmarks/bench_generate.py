"""Generate-cells speed: one click = load (cached) + sample n cells of every protein.

    python benchmarks/bench_generate.py                           # star-6 at widths 16 and 64, random weights
    python benchmarks/bench_generate.py --model star-6 --device cpu

Prints a markdown table of median wall times for ``sampling.sample`` (what the Generate widget
and ``biogans sample`` run) at 1 and 2 torch threads. Random weights cost the same as trained ones.
Target (issue 6): 16 cells of 6 proteins well under 0.3 s on a CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from napari_biogans.devices import describe_device, resolve_device
from napari_biogans.sampling import sample

PROTEINS = ["Alp14", "Arp3", "Cki2", "Mkh1", "Sid2", "Tea1"]


def models(args, device):
    if args.model:
        from napari_biogans import checkpoints

        generator, meta = checkpoints.load_generator(checkpoints.resolve_model(args.model), device)
        yield f"{args.model} (width {generator.config['width']})", generator, meta
        return
    from napari_biogans.models import make_models

    for width in (16, 64):
        torch.manual_seed(0)
        generator, _ = make_models("star", n_classes=len(PROTEINS), width=width, critic_bn=False)
        yield f"star-6, width {width} (random)", generator.to(device).eval(), {"class_names": PROTEINS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", help="catalogue name or model file (default: random star-6 generators)")
    parser.add_argument("--cells", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = resolve_device(args.device)
    thread_counts = (1, 2) if device.type == "cpu" else (torch.get_num_threads(),)
    print(f"device: {describe_device(device)}; {args.cells} cells, median of {args.repeats}\n")
    print("| model | torch threads | ms per click |")
    print("|---|---:|---:|")
    for name, generator, meta in models(args, device):
        for threads in thread_counts:
            torch.set_num_threads(threads)
            sample(generator, meta, args.cells, seed=0)  # warm-up (first call allocates)
            times = []
            for seed in range(args.repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                sample(generator, meta, args.cells, seed=seed)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            print(f"| {name} | {threads} | {statistics.median(times) * 1000:.0f} |")


if __name__ == "__main__":
    main()
