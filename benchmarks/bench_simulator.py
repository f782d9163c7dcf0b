"""Fission-yeast simulator speed: 1,000 and 10,000 cells of 48 x 80, all eight proteins.

    python benchmarks/bench_simulator.py
    python benchmarks/bench_simulator.py --cells 1000 10000 --size 96x160

Prints a markdown table. The simulator runs in one process (``cores used`` = 1); the target is
10,000 cells of 48 x 80 in under 30 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from napari_biogans.data.simulator import PROTEINS, simulate_cells


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[1000, 10000], help="total cells per run")
    parser.add_argument("--size", default="48x80", help="frame size HxW: 48x80 or 96x160")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))

    simulate_cells(1, size=size)  # imports and caches outside the timing
    machine = platform.processor() or platform.machine()
    print(f"simulator, {size[0]} x {size[1]}, {len(PROTEINS)} proteins; {machine}, {os.cpu_count()} cores\n")
    print("| cells | seconds | cells/s | cores used |")
    print("|---:|---:|---:|---:|")
    for total in args.cells:
        n_per_class = max(total // len(PROTEINS), 1)
        start = time.perf_counter()
        cells = simulate_cells(n_per_class, size=size)
        seconds = time.perf_counter() - start
        print(f"| {len(cells.images):,} | {seconds:.2f} | {len(cells.images) / seconds:,.0f} | 1 |")


if __name__ == "__main__":
    main()
