"""Generate-cells and Cell-cycle speed on a CPU: one click of each widget, model already loaded.

    python benchmarks/bench_generate.py                           # star-6 at widths 16, 48 and 64, random weights
    python benchmarks/bench_generate.py --model star-6 --device cpu

Prints a markdown table of median wall times at 1 and 2 torch threads for ``sampling.sample``
(what the Generate widget and ``biogans sample`` run: 16 cells of 6 proteins) and for the Cell
cycle widget's worker body (a 64-frame slerp through 3 anchors, rendered in chunks to uint8, red
lengths measured; through 3 random codes, and through one cell cycle, whose anchors are picked
from 512 measured codes first, the widget's default), each with the star generator's two execution paths over the same weights:
its green towers as one grouped convolution, or one tower after another (``per-tower``); the
product picks by device (``models.fluorescence.towers_one_by_one``: per-tower on a CPU, grouped
on CUDA) and these rows are why. Random weights cost the same as trained ones. Targets (DESIGN):
Generate well under 0.3 s, a 64-frame interpolation under 1 s on a 2-core CPU.
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
    """(name, generator, meta) for the given model or random star-6 generators."""
    if args.model:
        from napari_biogans import checkpoints

        generator, meta = checkpoints.load_generator(checkpoints.resolve_model(args.model), device)
        yield f"{args.model} (width {generator.config['width']})", generator, meta
        return
    from napari_biogans.models import make_models

    for width in (16, 48, 64):
        torch.manual_seed(0)
        generator, _ = make_models("star", n_classes=len(PROTEINS), width=width, critic_bn=False)
        yield f"star-6, width {width} (random)", generator.to(device).eval(), {"class_names": PROTEINS}


def median_seconds(run, repeats: int, device) -> float:
    run()  # warm-up (first call allocates)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interpolation(generator, meta, device, frames: int, cycle: bool = False):
    """The Cell cycle widget's worker body, run to the end, on the loaded model (as from its cache)."""
    from napari_biogans.cell_session import interpolate_job

    job = interpolate_job(lambda path, _: (generator, meta, device), None, str(device), None, 3, 0, frames, "slerp",
                          False, None, cycle)
    for _ in job:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", help="catalogue name or model file (default: random star-6 generators)")
    parser.add_argument("--cells", type=int, default=16)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = resolve_device(args.device)
    thread_counts = (1, 2) if device.type == "cpu" else (torch.get_num_threads(),)
    print(f"device: {describe_device(device)}; Generate: {args.cells} cells; Cell cycle: {args.frames} frames; "
          f"median of {args.repeats}\n")
    print("| model | towers | torch threads | Generate, ms per click | Cell cycle, ms per interpolation "
          "(random codes) | Cell cycle, ms (one cell cycle, anchors included) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, generator, meta in models(args, device):
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for execution in ("grouped", "per-tower"):
                generator.execution = execution
                seeds = iter(range(10**6))
                click = median_seconds(lambda: sample(generator, meta, args.cells, seed=next(seeds)),
                                       args.repeats, device)
                interp = median_seconds(lambda: interpolation(generator, meta, device, args.frames),
                                        args.repeats, device)
                cycle = median_seconds(lambda: interpolation(generator, meta, device, args.frames, cycle=True),
                                       args.repeats, device)
                print(f"| {name} | {execution} | {threads} | {click * 1000:.0f} | {interp * 1000:.0f} | "
                      f"{cycle * 1000:.0f} |", flush=True)


if __name__ == "__main__":
    main()
