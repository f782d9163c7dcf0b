"""Re-measure the shipped fluorescence cards' diagnostics with calibrated settings (issue 15).

Writes the cards' held-out simulated cells (the test splits of the cards' ``biogans simulate``
commands: seed 7, 500 cells per protein), calibrates the diagnostics on them through the CLI
(``biogans evaluate calibrate``), then runs the fast feature test (``biogans evaluate c2st --method
fast``) of every shipped fluorescence model, timing each. Long on a shared CPU: run it nice'd in the
background with a time limit, e.g.

    OMP_NUM_THREADS=1 nohup nice -n 10 python scripts/calibrate_cards.py --out /work/runs/calib/cards \\
        --critic-proteins Tea1 --critic-steps 300 1000 &

Every command it ran and its wall time go to ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

CARDS = {"star-6": "six", "one-class-sep-2": "six", "projection-8": "eight"}
PROTEINS = {"six": "Alp14,Arp3,Cki2,Mkh1,Sid2,Tea1", "eight": "Alp14,Arp3,Cki2,Fim1,Mkh1,Sid2,Tea1,Tea4"}
SEED = 7
TEST_CELLS = 500


def main(argv=None) -> int:
    import torch

    from napari_biogans import cli
    from napari_biogans.data import lin
    from napari_biogans.data.simulator import simulate_stack

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--critic-proteins", default="Tea1", help="proteins of the critic calibration ('' skips it)")
    parser.add_argument("--critic-steps", type=int, nargs="*", default=[300], help="critic budgets to calibrate")
    parser.add_argument("--critic-splits", type=int, default=3)
    parser.add_argument("--critic-width", type=int, default=16)
    parser.add_argument("--time-limit", type=float, default=90, help="minutes; later steps are skipped")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, summary = time.time(), {"commands": [], "device": "cpu (2 cores, shared)"}

    def run(argv: list[str]) -> float:
        began = time.time()
        code = cli.main(argv)
        seconds = time.time() - began
        summary["commands"].append({"command": "biogans " + " ".join(argv), "seconds": seconds, "exit": code})
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return seconds

    def time_left() -> bool:
        return (time.time() - start) / 60 < args.time_limit

    data = {}
    for name, proteins in PROTEINS.items():
        folder = out / f"sim-{name}" / cli.SIMULATED_RELEASE.format(h=48, w=80, role="test")
        if not folder.is_dir():
            stack = simulate_stack(TEST_CELLS, proteins.split(","), seed=SEED + cli.TEST_SEED_OFFSET)
            lin.write_lin_folder(stack, folder)
        data[name] = str(folder)
    # the fast test, FID and nearest neighbour on every protein (this also trains and caches the feature net)
    run(["evaluate", "calibrate", "--data", data["eight"], "--out", str(out / "calibrate-eight"), "--device", "cpu",
         "--no-critic"])
    run(["evaluate", "calibrate", "--data", data["six"], "--out", str(out / "calibrate-six"), "--device", "cpu",
         "--no-critic"])
    for model, which in CARDS.items():
        if time_left():
            run(["evaluate", "c2st", "--method", "fast", "--model", model, "--data", data[which], "--out",
                 str(out / f"fast-{model}"), "--device", "cpu"])
    for steps in args.critic_steps if args.critic_proteins else []:
        if time_left():
            run(["evaluate", "calibrate", "--data", data["six"], "--out", str(out / f"critic-{steps}"), "--device",
                 "cpu", "--proteins", args.critic_proteins, "--steps", str(steps), "--splits", str(args.critic_splits),
                 "--width", str(args.critic_width)])
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
