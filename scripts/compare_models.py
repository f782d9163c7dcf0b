"""One comparison table of several fluorescence models on the same simulated data (the thesis's table shape).

    python scripts/compare_models.py --model star-6=pretrained/star-6.safetensors \\
        --model projection-6=runs/projection/generator.safetensors ... \\
        --train SIM_TRAIN --test SIM_TEST --out docs/results/comparison --device cuda \\
        [--c2st-steps 1000 --c2st-splits 10 --generated 500 --classifier-iterations 2000]

For every model it runs ``biogans evaluate fid`` (FID per protein with the LIN classifier; the
classifier is trained with the same seed each time, so every model meets the same one) and
``biogans evaluate c2st``, then writes ``comparison.md`` (FID and C2ST median ± MAD per protein,
one column per model, with the commands, iterations and device) and ``comparison.csv``. The
models must know the same proteins. Figures come from the runs; nothing is typed in.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from publish_model import run_cli  # scripts/ is on the path when this script runs


def evaluate(name: str, path: str, args, out: Path) -> tuple[dict, dict, list[str]]:
    """(FID per protein, C2ST per protein, commands) of one model."""
    fid_dir, c2st_dir = out / name / "fid", out / name / "c2st"
    commands = [
        run_cli(["evaluate", "fid", "--model", path, "--train", args.train, "--data", args.test, "--out", str(fid_dir),
                 "--generated", str(args.generated), "--classifier-iterations", str(args.classifier_iterations),
                 "--device", args.device]),
        run_cli(["evaluate", "c2st", "--method", "critic", "--model", path, "--data", args.test, "--out",
                 str(c2st_dir), "--splits", str(args.c2st_splits), "--steps", str(args.c2st_steps), "--width",
                 str(args.c2st_width), "--batch-size", str(args.c2st_batch_size), "--device", args.device]),
    ]
    fid = json.loads((fid_dir / "fid.json").read_text())
    c2st = json.loads((c2st_dir / "c2st.json").read_text())
    return fid, c2st, commands


def model_cards(models: dict) -> dict:
    """Each model's checkpoint header; all must know the same proteins (one LIN classifier serves all)."""
    from napari_biogans import checkpoints

    metas = {n: checkpoints.load(checkpoints.resolve_model(p), kind="generator")[1] for n, p in models.items()}
    proteins = {n: tuple(m["class_names"]) for n, m in metas.items()}
    if len(set(proteins.values())) > 1:
        raise SystemExit(f"the models know different proteins {proteins}: FID with one classifier compares "
                         "models of the same proteins only")
    return metas


def training_rows(names: list[str], metas: dict) -> list[list[str]]:
    """Iterations and device of each model under its FID and C2ST columns."""
    metas = [metas[n] for n in names]
    rows = []
    for label, key in (("iterations", "iterations"), ("trained on", "device")):
        values = [str(meta.get(key, "")) for meta in metas]
        rows.append([label, ""] + values + values)
    return rows


def table(names: list[str], results: dict) -> tuple[list[str], list[list[str]]]:
    """Rows of protein x (FID, C2ST) per model; the 'mean' / 'all' row last."""
    proteins: list[str] = []
    for fid, _, _ in results.values():
        proteins += [p for p in fid["fid"] if p not in proteins]
    header = ["protein", "real-vs-real FID"] + [f"{n} FID" for n in names] + [f"{n} C2ST" for n in names]
    rows = []
    for protein in proteins + ["all"]:
        real = next((f["fid"][protein]["real"] for f, _, _ in results.values() if protein in f["fid"]), None)
        row = [protein, "" if real is None else f"{real:.1f}"]
        for n in names:
            fid = results[n][0]["fid"]
            if protein == "all":
                values = [v["generated"] for v in fid.values()]
                row.append(f"{sum(values) / len(values):.1f} (mean)")
            else:
                row.append(f"{fid[protein]['generated']:.1f}" if protein in fid else "")
        for n in names:
            score = results[n][1]["scores"].get(protein)
            row.append(f"{score['median']:.2f} ± {score['mad']:.2f}" if score else "")
        rows.append(row)
    return header, rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="a column of the table (repeatable): a name and a catalogue name or .safetensors file")
    parser.add_argument("--train", required=True, help="simulated training cells (the LIN classifier learns them)")
    parser.add_argument("--test", required=True, help="held-out simulated cells (FID and C2ST reals)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--generated", type=int, default=500, help="generated cells per protein for FID")
    parser.add_argument("--classifier-iterations", type=int, default=2000)
    parser.add_argument("--c2st-steps", type=int, default=1000)
    parser.add_argument("--c2st-splits", type=int, default=10)
    parser.add_argument("--c2st-width", type=int, default=64)
    parser.add_argument("--c2st-batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--note", default="", help="a line under the title (e.g. how the models were trained)")
    args = parser.parse_args(argv)

    models = dict(spec.split("=", 1) for spec in args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metas = model_cards(models)
    results = {name: evaluate(name, path, args, out) for name, path in models.items()}
    names = list(models)
    header, rows = table(names, results)
    rows += training_rows(names, metas)
    with open(out / "comparison.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    device = next(iter(results.values()))[1]["settings"]["device"]
    lines = ["# Model comparison on simulated cells", ""]
    if args.note:
        lines += [args.note, ""]
    lines += [
        f"FID per protein with the LIN classifier ({args.generated} generated cells per protein; lower is better; "
        "'real-vs-real' is the FID of the training cells against the held-out ones, the floor) and C2ST median ± "
        f"MAD over {args.c2st_splits} splits ({args.c2st_steps} WGAN-GP critic steps, critic width "
        f"{args.c2st_width}; 0 = indistinguishable from held-out cells). Device: {device}.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "Commands:", "", "```"]
    commands = [command for result in results.values() for command in result[2]]
    # as a reader would type them: models by their column name, the simulated release as sim/, outputs in DIR
    for name, path in models.items():
        commands = [c.replace(path, name) for c in commands]
    for folder, short in ((str(Path(args.train).parent), "sim"), (str(out), "DIR")):
        commands = [c.replace(folder, short) for c in commands]
    lines += commands
    lines += ["```", ""]
    (out / "comparison.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
