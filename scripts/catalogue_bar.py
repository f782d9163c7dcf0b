"""The catalogue's minimum quality (README): each protein of a shipped fluorescence model must be
recognised by the fast test's feature network, a protein classifier trained once on held-out real
cells, in at least half as many of its generated cells as of that network's own held-out real cells
(``fast_test.RECOGNITION_BAR``). Writes the figures into the cards (JSON and Markdown) and prints them.

    python scripts/catalogue_bar.py --cells OUT/sim-eight/LIN_Simulated_WT_size-48-80_test [--update-cards pretrained]

The cells are the cards' held-out split (scripts/calibrate_cards.py writes them), so the feature
network is the one the fast test and the calibration use (cached per data set).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CELLS_PER_PROTEIN = 500


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", required=True, help="held-out real cells holding every model's proteins")
    parser.add_argument("--update-cards", default=None, help="the pretrained/ folder whose cards get the figures")
    args = parser.parse_args(argv)

    import torch

    from napari_biogans import checkpoints, jobs
    from napari_biogans.data.lin import read_cells, to_uint8
    from napari_biogans.evaluation.fast_test import RECOGNITION_BAR, FastTestSettings, feature_net_job, recognition
    from napari_biogans.sampling import latent_codes, render

    torch.set_num_threads(1)
    cells = read_cells(args.cells)
    net = jobs.run(feature_net_job(cells, FastTestSettings()))
    print(f"feature network: held-out accuracy {net.accuracy:.3f} on {cells.description}\n")
    print("| model | protein | recognised (generated) | recall (held-out real) | passes |\n|---|---|---:|---:|---|")
    failed = []
    for name, path in sorted(checkpoints.catalogue().items()):
        if checkpoints.card_kind(path) != "generator":
            continue
        generator, meta = checkpoints.load_generator(path)
        pairs = to_uint8(render(generator.eval(), latent_codes(CELLS_PER_PROTEIN, generator.nz, generator.nz_red, 0)))
        found = recognition(net, cells, {p: pairs[:, c] for c, p in enumerate(meta["class_names"])})
        for protein, r in found.items():
            print(f"| {name} | {protein} | {r['generated']:.3f} | {r['real']:.3f} | {'yes' if r['passes'] else '**no**'} |")
        if not all(r["passes"] for r in found.values()):
            failed.append(name)
        if args.update_cards:
            update_card(Path(args.update_cards), name, found, cells.description, net.accuracy)
    print(f"\nbar: generated ≥ {RECOGNITION_BAR} × real recall on every protein; failing: {failed or 'none'}")
    return 1 if failed else 0


def update_card(pretrained: Path, name: str, found: dict, data: str, accuracy: float) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from publish_model import markdown_card

    card_file = pretrained / f"{name}.json"
    if not card_file.is_file():
        return
    card = json.loads(card_file.read_text())
    card["diagnostics"]["recognition"] = {
        "proteins": {p: {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for p, r in found.items()},
        "cells": CELLS_PER_PROTEIN, "data": data, "feature_net_accuracy": round(accuracy, 3),
        "command": "python scripts/catalogue_bar.py --cells sim8/LIN_Simulated_WT_size-48-80_test"}
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    (pretrained / f"{name}.md").write_text(markdown_card(card))


if __name__ == "__main__":
    raise SystemExit(main())
