"""Re-measure the shipped fluorescence cards' diagnostics with calibrated settings (issue 15).

Writes held-out simulated cells as the cards' ``biogans simulate`` commands do (test split of seed
7, 500 cells per protein; all eight proteins, so every card is judged on the same cells and one
feature network serves them all), calibrates the diagnostics on them through the CLI
(``biogans evaluate calibrate``), then runs the fast feature test (``biogans evaluate c2st --method
fast``) of every shipped fluorescence model, timing each. Long on a shared CPU: run it nice'd in the
background with a time limit, e.g.

    OMP_NUM_THREADS=1 nohup nice -n 10 python scripts/calibrate_cards.py --out /work/runs/calib/cards &

The paper's critic is calibrated one protein per run at the CPU budget (``calibrate.CPU_CRITIC``,
the controls a verdict rests on), so an interrupted campaign keeps every finished protein (the
verdicts are remembered per protein), then each card's critic C2ST runs at that budget.

Every command it ran and its wall time go to ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

CARDS = ("star-6", "one-class-sep-6")
PROTEINS = "Alp14,Arp3,Cki2,Fim1,Mkh1,Sid2,Tea1,Tea4"  # every card's proteins are among them
SEED = 7
TEST_CELLS = 500


def main(argv=None) -> int:
    import torch

    from napari_biogans import cli
    from napari_biogans.evaluation.calibrate import CPU_CRITIC
    from napari_biogans.data import lin
    from napari_biogans.data.simulator import simulate_stack

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--critic-proteins", default=PROTEINS, help="proteins of the critic calibration ('' skips it)")
    parser.add_argument("--update-cards", default=None, help="the pretrained/ folder whose cards get the numbers")
    parser.add_argument("--only-update", action="store_true", help="measure nothing: update the cards from OUT")
    parser.add_argument("--time-limit", type=float, default=90, help="minutes; later steps are skipped")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, summary = time.time(), {"commands": [], "device": "cpu (2 cores, shared)"}
    if args.only_update:
        update_cards(Path(args.update_cards), out)
        return 0

    def run(argv: list[str]) -> float:
        began = time.time()
        code = cli.main(argv)
        seconds = time.time() - began
        summary["commands"].append({"command": "biogans " + " ".join(argv), "seconds": seconds, "exit": code})
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return seconds

    def time_left() -> bool:
        return (time.time() - start) / 60 < args.time_limit

    folder = out / "sim-eight" / cli.SIMULATED_RELEASE.format(h=48, w=80, role="test")
    if not folder.is_dir():
        stack = simulate_stack(TEST_CELLS, PROTEINS.split(","), seed=SEED + cli.TEST_SEED_OFFSET)
        lin.write_lin_folder(stack, folder)
    # the fast test, FID and nearest neighbour on every protein (this also trains and caches the feature net)
    run(["evaluate", "calibrate", "--data", str(folder), "--out", str(out / "calibrate"), "--device", "cpu",
         "--no-critic"])
    for model in CARDS:
        if time_left():
            run(["evaluate", "c2st", "--method", "fast", "--model", model, "--data", str(folder), "--out",
                 str(out / f"fast-{model}"), "--device", "cpu"])
    critic = ["--splits", str(CPU_CRITIC["splits"]), "--steps", str(CPU_CRITIC["steps"]), "--width",
              str(CPU_CRITIC["width"]), "--batch-size", str(CPU_CRITIC["batch_size"]), "--lr", str(CPU_CRITIC["lr"])]
    for protein in filter(None, args.critic_proteins.split(",")):
        if time_left() and not (out / f"critic-{protein}" / "calibration.json").is_file():
            run(["evaluate", "calibrate", "--data", str(folder), "--out", str(out / f"critic-{protein}"), "--device",
                 "cpu", "--proteins", protein, "--critic-only", "--required-controls", *critic])
    for model in CARDS:
        if time_left() and not (out / f"c2st-{model}" / "c2st.json").is_file():
            run(["evaluate", "c2st", "--method", "critic", "--model", model, "--data", str(folder), "--out",
                 str(out / f"c2st-{model}"), "--device", "cpu", *critic])
    if args.update_cards:
        update_cards(Path(args.update_cards), out)
    print(json.dumps(summary, indent=2))
    return 0


def critic_card_trust(out: Path, settings: dict, proteins: list[str]) -> dict:
    """The trust of a card's critic C2ST numbers: what the critic calibrations remembered for the
    simulated held-out cells say about their budget, for the card's proteins."""
    from napari_biogans.data.lin import read_cells
    from napari_biogans.evaluation.calibrate import critic_trust

    cells = read_cells(out / "sim-eight" / "LIN_Simulated_WT_size-48-80_test")
    return critic_trust(cells, settings["steps"], settings["splits"], settings["critic_width"],
                        settings["algorithm"], lr=settings.get("lr"), batch_size=settings.get("batch_size", 64),
                        proteins=[p for p in proteins if p in cells.class_names]).as_dict()


def update_cards(pretrained: Path, out: Path) -> None:
    """Put the fast feature test and the critic C2ST (``OUT/c2st-<model>``), with its trust, into each
    card's JSON and Markdown."""
    sys.path.insert(0, str(Path(__file__).parent))
    from publish_model import critic_c2st_card, fast_c2st_card, markdown_card

    data = "sim8/LIN_Simulated_WT_size-48-80_test"
    for model in CARDS:
        fast = out / f"fast-{model}" / "fast_c2st.json"
        card_file = pretrained / f"{model}.json"
        if not fast.is_file() or not card_file.is_file():
            continue
        card = json.loads(card_file.read_text())
        diag = card["diagnostics"]
        diag["fast_c2st"] = fast_c2st_card(json.loads(fast.read_text()))
        diag["fast_c2st"]["data"] = (f"sim8: `biogans simulate --out sim8 --cells-per-class 1 --test-cells-per-class "
                                     f"{TEST_CELLS} --proteins {PROTEINS} --seed {SEED}` (its test split)")
        commands = [f"biogans evaluate c2st --method fast --model {model} --data {data} --out DIR/fast_c2st "
                    "--device cpu"]
        critic = out / f"c2st-{model}" / "c2st.json"
        if critic.is_file():
            diag.update(critic_c2st_card(json.loads(critic.read_text())))
            s = diag["c2st_settings"]
            commands.append(f"biogans evaluate c2st --method critic --model {model} --data {data} --out DIR/c2st "
                            f"--splits {s['splits']} --steps {s['steps']} --width {s['critic_width']} --batch-size "
                            f"{s['batch_size']} --lr {s['lr']:g} --device cpu")
            card["known_limits"] = [line for line in card["known_limits"] if not line.startswith("C2ST here uses")] + [
                f"C2ST here uses the critic budget calibrated on a CPU ({s['splits']} splits × {s['steps']} steps, "
                f"width {s['critic_width']}, batch {s['batch_size']}, learning rate {s['lr']:g}; the paper: 10 × "
                "5,000 steps at width 64), so its scores are not comparable with the paper's"]
        diag["c2st_trust"] = critic_card_trust(out, diag["c2st_settings"], card["class_names"])
        card["diagnostics_commands"] = commands + [c for c in card["diagnostics_commands"]
                                                   if "evaluate c2st" not in c]
        card_file.write_text(json.dumps(card, indent=2) + "\n")
        (pretrained / f"{model}.md").write_text(markdown_card(card))


if __name__ == "__main__":
    raise SystemExit(main())
