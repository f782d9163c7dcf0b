"""Star-shaped WGAN-GP training speed: the tuned path against a plain fp32 eager loop, same run.

    python benchmarks/bench_train.py                 # full width, 6 proteins, batch 64
    python benchmarks/bench_train.py --width 8 --iterations 3 --warmup 1   # a quick CPU smoke run

Prints a markdown table: iterations/s, model FLOPs per iteration (counted by
``torch.utils.flop_counter`` on one real iteration: 5 critic steps with gradient penalty and one
generator step) and the fraction of the device's dense bf16 (tuned) or TF32/fp32 (plain) peak.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from napari_biogans.data.simulator import simulate_stack
from napari_biogans.devices import describe_device, resolve_device
from napari_biogans.training.trainer import TrainConfig, Trainer

# Dense peak TFLOP/s from the vendors' data sheets (without sparsity): (bf16, tf32, fp32)
PEAKS = {"H100": (989.0, 494.0, 67.0), "H200": (989.0, 494.0, 67.0), "A100": (312.0, 156.0, 19.5)}
PROTEINS = ["Alp14", "Arp3", "Cki2", "Mkh1", "Sid2", "Tea1"]


class CountFlops(TorchDispatchMode):
    """Model FLOPs of the ops torch's flop counter knows (matmuls, convolutions), forward and backward.

    ``torch.utils.flop_counter.FlopCounterMode`` cannot be used here: its module tracker breaks
    ``autograd.grad`` (the gradient penalty) in torch 2.13; its formulas are used as they are.
    """

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def peak_for(device, dtype: str):
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAKS.items():
        if key in name:
            return peaks[0] if dtype == "bf16" else peaks[1]
    return None


def measure(stack, device: str, tuned: bool, args) -> dict:
    config = TrainConfig(
        arch="star", objective="wgan-gp", iterations=10**9, batch_size=args.batch_size, width=args.width,
        device=device, amp=tuned, compile=tuned and args.compile, checkpoint_every=10**9,
    )
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, stack, run_dir)
        if not tuned:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        for _ in range(args.warmup):
            trainer.step()
        counter = CountFlops()
        with counter:
            trainer.step()
        flops = counter.total
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(args.iterations):
            losses = trainer.step()
        float(losses["critic"])
        sync()
        seconds = time.perf_counter() - start
    its = args.iterations / seconds
    peak = peak_for(trainer.device, "bf16" if tuned else "tf32")
    return {
        "path": "tuned (bf16 autocast, channels-last, TF32, fused Adam" + (", compiled G)" if config.compile else ")")
        if tuned else "plain fp32 eager",
        "its": its,
        "flops": flops,
        "tflops": flops * its / 1e12,
        "peak": peak,
        "device": describe_device(trainer.device),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    args = parser.parse_args()
    stack = simulate_stack(n_per_class=256, proteins=PROTEINS, seed=0)
    device = resolve_device(args.device)
    rows = [measure(stack, str(device), tuned, args) for tuned in (False, True)]
    print(f"\nstar-shaped WGAN-GP, 6 proteins, batch {args.batch_size} per protein, width {args.width}, "
          f"{rows[0]['device']}, torch {torch.__version__}\n")
    print("| path | it/s | model GFLOP / it | achieved TFLOP/s | fraction of peak |")
    print("|---|---|---|---|---|")
    for r in rows:
        fraction = f"{r['tflops'] / r['peak']:.1%}" if r["peak"] else "n/a"
        print(f"| {r['path']} | {r['its']:.2f} | {r['flops'] / 1e9:.1f} | {r['tflops']:.2f} | {fraction} |")
    print(f"\nspeed-up of the tuned path: {rows[1]['its'] / rows[0]['its']:.2f}x")


if __name__ == "__main__":
    main()
