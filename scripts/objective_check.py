"""Does a model and objective start to learn on these cells? A short run that prints, every
``--every`` iterations, the losses and the mean and standard deviation of a fixed batch of the
generator's output beside those of the real cells (a generator stuck at grey stays near 0 / 0).

    python scripts/objective_check.py --data SIM_TRAIN --model projection --objective hinge \\
        --proteins Sid2,Tea1 --iterations 200 [--spectral-norm]

This is how the projection model's hinge stall was found (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from napari_biogans.data import lin
from napari_biogans.training import TRAIN_MODELS
from napari_biogans.training.trainer import TrainConfig, Trainer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="LIN split folder, .h5 or .tif cell stack")
    parser.add_argument("--model", default="projection", choices=TRAIN_MODELS)
    parser.add_argument("--objective", default="hinge", choices=["gan", "wgan", "wgan-gp", "lsgan", "hinge"])
    parser.add_argument("--proteins", default=None, help="comma-separated subset")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--spectral-norm", action="store_true", help="spectral norm on the critic")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    stack = lin.read_cells(args.data)
    if args.proteins:
        stack = stack.select_classes(args.proteins.split(","))
    real = stack.as_float()
    print(f"real cells: mean {real.mean():.3f} std {real.std():.3f}")
    config = TrainConfig(arch=args.model, objective=args.objective, iterations=args.iterations,
                         batch_size=args.batch_size, width=args.width, seed=args.seed, device="cpu",
                         checkpoint_every=10**9, log_every=args.every, preview_every=10**9,
                         spectral_norm=args.spectral_norm)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, stack, run_dir)
        z = torch.randn(16, trainer.G.nz, generator=torch.Generator().manual_seed(0))
        start = time.perf_counter()
        for event in (u.payload for u in trainer.run()):
            if event.finished:
                break
            trainer.G.eval()
            with torch.no_grad():
                out = trainer.G(z)
            trainer.G.train()
            losses = " ".join(f"{k} {v:.3g}" for k, v in event.losses.items())
            print(f"{event.iteration:6d} {time.perf_counter() - start:6.0f} s  output mean {out.mean():.3f} "
                  f"std {out.std():.3f}  {losses}", flush=True)


if __name__ == "__main__":
    main()
