"""EM rendering speed: one pass against tiles, and the one-tile re-render after a paint stroke.

    python benchmarks/bench_em_render.py                      # default G_x (width 64), current device
    python benchmarks/bench_em_render.py --model run/em_model.safetensors --device cpu

Prints a markdown table of median wall times. Labels are the shipped 512² sample of VNC
section 10 (mirrored into a 1024² mosaic, or a smaller crop of it with ``--size``); without
``--model`` G_x has random weights, which costs the same as trained ones.
"""

from __future__ import annotations

import argparse
import statistics
import time
from importlib import resources

import imageio.v3 as iio
import numpy as np
import torch

from napari_biogans import rendering
from napari_biogans.devices import describe_device, resolve_device
from napari_biogans.models.em import CascadeGenerator


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", help="an em_model.safetensors file (default: random default-width G_x)")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024, help="side of the large canvas (at most 1024)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    if args.model:
        from napari_biogans.models.em_inference import load_em_model

        generator = load_em_model(args.model, device).image_generator
    else:
        torch.manual_seed(0)
        generator = CascadeGenerator()
    generator = generator.to(device).eval()
    sample = resources.files("napari_biogans.data") / "samples" / "vnc_section10_labels.png"
    half = iio.imread(sample)
    big = np.block([[half, half[:, ::-1]], [half[::-1], half[::-1, ::-1]]])[: args.size, : args.size]
    small = half[128:384, 128:384]
    kw = dict(tile=args.tile, overlap=args.overlap, device=device)

    rows = []
    for name, labels in (("256²", small), (f"{len(big)}²", big)):
        t, _ = timed(lambda labels=labels: rendering.render(generator, labels, device=device), args.repeats)
        rows.append((f"one pass {name}", t, 1))
        n = len(rendering.TileGrid(labels.shape, args.tile, args.overlap, generator.factor))
        t, _ = timed(lambda labels=labels: rendering.render_tiled(generator, labels, **kw), args.repeats)
        rows.append((f"tiled {name}", t, n))

    renderer = rendering.TiledRenderer(generator, **kw)
    renderer.render(big)
    edited = big.copy()
    strokes = iter(range(10_000))

    def stroke():
        k = next(strokes) % 20
        edited[100 + k : 110 + k, 100:120] = 2 if k % 2 else 1  # a small stroke inside tile (0, 0)
        return renderer.update(edited)

    t, (_, n) = timed(stroke, max(args.repeats, 5))
    rows.append((f"re-render after a small edit ({len(big)}² canvas)", t, n))

    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"G_x width {generator.config['width']}, {generator.config['n_blocks']} blocks; tile {args.tile}, "
          f"overlap {args.overlap}; device {describe_device(device)}; torch threads {threads}; "
          f"median of {args.repeats}+ runs\n")
    print("| render | seconds | tiles rendered |")
    print("|---|---:|---:|")
    for name, seconds, n in rows:
        print(f"| {name} | {seconds:.3f} | {n} |")


if __name__ == "__main__":
    main()
