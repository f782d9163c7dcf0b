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

    if path.suffix == ".safetensors":
        return describe_checkpoint(path)
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


def describe_checkpoint(path: Path) -> str:
    from . import checkpoints

    tensors, meta = checkpoints.load(path)
    n_params = sum(t.numel() for t in tensors.values())
    lines = [f"{path}: napari-biogans {meta['kind']} checkpoint, {len(tensors)} tensors, {n_params:,} values"]
    config = meta.get("config") or meta.get("generator_config")
    lines.append(f"architecture: {config}")
    if "iteration" in meta or "iterations" in meta:
        lines.append(f"iterations: {meta.get('iterations', meta.get('iteration'))}")
    if "class_names" in meta:
        lines.append("proteins: " + ", ".join(meta["class_names"]))
    data = meta.get("data")
    if data:
        flag = "  [trained on SIMULATED cells]" if data.get("simulated") else ""
        lines.append(f"training data: {data.get('description')} ({data.get('cells')} cells){flag}")
    return "\n".join(lines)


def cmd_info(args) -> int:
    print(describe(Path(args.path)))
    return 0


def _load_cells(path, proteins):
    from .data import lin

    stack = lin.read_cells(path)
    return stack.select_classes(proteins) if proteins else stack


def cmd_train(args) -> int:
    import os

    import torch
    from tqdm import tqdm

    from .training.trainer import TrainConfig, Trainer

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:  # launched by torchrun
        backend = "nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo"
        torch.distributed.init_process_group(backend)
    try:
        stack = _load_cells(args.data, args.proteins.split(",") if args.proteins else None)
        config = TrainConfig(
            arch=args.model, objective=args.objective, iterations=args.iterations, batch_size=args.batch_size,
            width=args.width, nz=args.nz, seed=args.seed, device=args.device,
            checkpoint_every=args.checkpoint_every, log_every=args.log_every, preview_every=args.iterations + 1,
            amp=not args.no_amp,
        )
        trainer = Trainer(config, stack, args.out, resume=args.resume)
        quiet = trainer.rank != 0
        if stack.simulated and not quiet:
            print("training on SIMULATED cells: the model will be marked as a model of simulated data")
        bar = tqdm(total=config.iterations, initial=trainer.iteration, disable=quiet, unit="it")
        try:
            for event in trainer.run():
                bar.update(event.iteration - bar.n)
                if event.losses:
                    bar.set_postfix({k: f"{v:.3g}" for k, v in event.losses.items() if k in ("critic", "generator")})
                if event.done and not quiet:
                    bar.close()
                    print(event.message)
        except KeyboardInterrupt:
            bar.close()
            trainer.save()
            print(f"interrupted at iteration {trainer.iteration}; saved {trainer.state_path}; resume with --resume")
            return 130
    finally:
        if distributed:
            torch.distributed.destroy_process_group()
    return 0


def cmd_sample(args) -> int:
    from . import checkpoints
    from .sampling import sample, write_samples

    path = checkpoints.resolve_model(args.model)
    generator, meta = checkpoints.load_generator(path)
    meta.setdefault("name", path.stem)
    meta.setdefault("sha256", checkpoints.file_sha256(path))
    proteins = args.proteins.split(",") if args.proteins else None
    samples = sample(generator, meta, n=args.n, seed=args.seed, proteins=proteins, red_seed=args.red_seed)
    write_samples(samples, args.out)
    print(f"{args.n} cells ({', '.join(samples.channel_names)}) from {path.name} -> {args.out}")
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

    p = sub.add_parser("train", help="train a fluorescence GAN on a LIN folder, .h5 or .tif stack")
    p.add_argument("--data", required=True, help="LIN split folder, .h5 or .tif cell stack")
    p.add_argument("--model", default="star", choices=["dcgan", "separable", "one-class", "star", "multichannel"])
    p.add_argument("--objective", default="wgan-gp", choices=["gan", "wgan", "wgan-gp", "lsgan", "hinge"])
    p.add_argument("--iterations", type=int, default=1000, help="generator iterations")
    p.add_argument("--batch-size", type=int, default=64, help="cells per class per step")
    p.add_argument("--width", type=int, default=64, help="base width (ngf = ndf); 64 is the paper's")
    p.add_argument("--nz", type=int, default=100, help="latent size")
    p.add_argument("--proteins", default=None, help="comma-separated proteins to train on (default: all)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast / TF32 on CUDA")
    p.add_argument("--out", required=True, help="run folder (checkpoints, generator, losses.csv)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample cells from a model to .tif or .h5")
    p.add_argument("--model", required=True, help="catalogue name or .safetensors file")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--red-seed", type=int, default=None, help="seed of the red noise alone (same red, new greens)")
    p.add_argument("--proteins", default=None, help="comma-separated proteins (default: all the model has)")
    p.add_argument("--out", required=True, help="output .tif or .h5")
    p.set_defaults(func=cmd_sample)

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
    except (LinFormatError, EMFormatError, FileExistsError, ValueError, RuntimeError) as err:
        print(f"biogans {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
