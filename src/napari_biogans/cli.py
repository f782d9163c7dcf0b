"""The ``biogans`` command line: the same core functions the napari widgets call."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__

SIMULATED_RELEASE = "LIN_Simulated_WT_size-{h}-{w}_{role}"
TEST_SEED_OFFSET = 10_000  # the test split is drawn from a disjoint seed so no cell repeats


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 48x80, got {text!r}") from None
    return h, w


def cmd_simulate(args) -> int:
    from .data import lin
    from .data.simulator import simulate_stack

    out = Path(args.out)
    proteins = args.proteins.split(",") if args.proteins else None
    h, w = args.size
    counts = {"train": args.cells_per_class, "test": args.test_cells_per_class or args.cells_per_class}
    for role, n in counts.items():
        seed = args.seed + (TEST_SEED_OFFSET if role == "test" else 0)
        stack = simulate_stack(n_per_class=n, proteins=proteins, seed=seed, size=(h, w))
        folder = lin.write_lin_folder(stack, out / SIMULATED_RELEASE.format(h=h, w=w, role=role))
        print(f"{role}: {len(stack)} simulated cells of {len(stack.class_names)} proteins -> {folder}")
    return 0


def describe(path: Path) -> str:
    """A human summary of what a LIN folder, release root, HDF5 or TIFF stack holds."""
    from .data import lin

    if path.is_dir() and not lin.is_lin_folder(path):
        splits = lin.find_lin_splits(path)
        return "\n\n".join(f"[{role}] {describe(folder)}" for role, folder in splits.items())
    stack = lin.read_cells(path)
    lines = [
        f"{path}: {len(stack)} cells of {stack.image_size[0]}x{stack.image_size[1]} pixels, "
        f"channels {', '.join(stack.channel_names)}",
        f"source: {stack.description}" + ("  [SIMULATED cells, not real LIN data]" if stack.simulated else ""),
        "classes: " + ", ".join(f"{name} ({count})" for name, count in stack.counts().items()),
    ]
    if stack.truth:
        lines.append("ground truth: " + ", ".join(sorted(stack.truth)))
    return "\n".join(lines)


def cmd_info(args) -> int:
    print(describe(Path(args.path)))
    return 0


def cmd_view(args) -> int:
    """Open napari with the plugin's offline sample data (the README's first command)."""
    import napari

    viewer = napari.Viewer(title="napari-biogans")
    for key in args.samples:
        viewer.open_sample("napari-biogans", key)
    napari.run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="biogans", description=__doc__)
    parser.add_argument("--version", action="version", version=f"napari-biogans {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write simulated fission-yeast cells in the LIN release layout")
    p.add_argument("--out", required=True, help="output folder; gets <name>_train/ and <name>_test/")
    p.add_argument("--cells-per-class", type=int, default=100, help="training cells per protein")
    p.add_argument("--test-cells-per-class", type=int, default=None, help="test cells per protein (default: same)")
    p.add_argument("--proteins", default=None, help="comma-separated proteins (default: all eight)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=_size, default=(48, 80), help="HxW, 48x80 or 96x160")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("info", help="what a LIN folder, .h5, .tif or checkpoint holds")
    p.add_argument("path")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("view", help="open napari with the plugin and its offline sample data")
    p.add_argument("--samples", nargs="*", default=["simulated_lin", "vnc_em"], help="sample keys to open")
    p.set_defaults(func=cmd_view)
    return parser


def main(argv=None) -> int:
    from .data.em import EMFormatError
    from .data.lin import LinFormatError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LinFormatError, EMFormatError, FileExistsError, ValueError) as err:
        print(f"biogans {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
