"""Publish a trained run into pretrained/: half-precision weights, a JSON and a Markdown card, a montage.

    python scripts/publish_model.py --run RUN_DIR --name star-6 --test SIM_TEST --train SIM_TRAIN \\
        --training-command "biogans train ..." [--c2st-steps 300 --c2st-splits 3 --reconstruct-cells 60]
    python scripts/publish_model.py --run EM_RUN --name vnc-dsgan --vnc VNC_STACK --training-command "..."
    python scripts/publish_model.py --remeasure --run - --name vnc-dsgan --vnc VNC_STACK --training-command - \\
        --em-options "..."   # new EM diagnostics for a published model (or --from-reports DIR ... to merge runs)
    python scripts/publish_model.py --remeasure --run - --name star-6 --training-command - --interpolation-pairs 50
        # a fluorescence model's growth along interpolations again

Fluorescence models: the diagnostics are run through the CLI (``biogans evaluate c2st``,
``biogans evaluate reconstruct`` with the nearest-neighbour baseline, and the growth
monotonicity of ``biogans interpolate --measure``) on held-out cells, and every command is
written into the cards. EM models: ``biogans evaluate em`` on the validation sections when the
``--vnc`` folder has them. Figures land in the cards as measured; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_biogans import checkpoints, cli

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
SIMULATED_NOTE = "trained on simulated cells: not a model of real LIN data"


def run_cli(argv: list[str]) -> str:
    """Run ``biogans ARGV`` in this process; returns the command line for the card."""
    code = cli.main(argv)
    if code:
        raise SystemExit(f"biogans {' '.join(argv)} failed with exit code {code}")
    return "biogans " + shlex.join(argv)


def training_time(run: Path) -> float | None:
    """Wall time of the run from its loss log (the last logged ``seconds``; resumed legs add up)."""
    path = run / "losses.csv"
    if not path.is_file():
        return None
    total, last = 0.0, 0.0
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            seconds = float(row["seconds"])
            if seconds < last:  # a resumed leg restarts its clock
                total += last
            last = seconds
    return round(total + last, 1)


def publish_weights(source: Path, target: Path, name: str, extra_meta: dict) -> tuple[dict, float]:
    """Half-precision copy of a generator model file; returns (meta, largest uint8 change of a sample)."""
    from napari_biogans.sampling import sample

    generator, meta = checkpoints.load_generator(source)
    meta = {k: v for k, v in meta.items() if k not in ("kind", "normalisation", "dtype", "versions", "format")}
    meta.update(name=name, **extra_meta)
    full = sample(generator, {**meta, "name": name}, 32, seed=0).images.astype(int)
    checkpoints.save_generator(target, generator, {k: v for k, v in meta.items() if k != "config"}, half=True)
    half_generator, _ = checkpoints.load_generator(target)
    half = sample(half_generator, {**meta, "name": name}, 32, seed=0).images.astype(int)
    return meta, float(np.abs(full - half).max())


def write_montage(model_file: Path, out: Path) -> str:
    """8 cells x (red + every protein) as one PNG; returns the command that made the samples."""
    import imageio.v3 as iio

    from napari_biogans.data.montage import make_montage
    from napari_biogans.sampling import is_red_channel, sample

    generator, meta = checkpoints.load_generator(model_file)
    samples = sample(generator, {**meta, "name": model_file.stem}, 8, seed=0)
    images, names = samples.images, samples.channel_names
    # each protein with the red cell it was generated on (the last Bgs4 channel before it)
    greens = [j for j, name in enumerate(names) if not is_red_channel(name)]
    reds = [max(i for i in range(j) if is_red_channel(names[i])) for j in greens]
    pairs = np.stack([np.stack([images[:, r], images[:, g]], 1) for r, g in zip(reds, greens)], 1)
    iio.imwrite(out, make_montage(pairs.reshape(-1, 2, *images.shape[-2:]), ncols=len(greens)))
    return f"seeded sample: sampling.sample(seed=0, n=8) of {model_file.name}"


def fluorescence_diagnostics(model_file: Path, args, work: Path) -> tuple[dict, list[str]]:
    commands, diag = [], {}
    c2st_dir, fast_dir, rec_dir = work / "c2st", work / "fast_c2st", work / "reconstruct"
    commands.append(run_cli(["evaluate", "c2st", "--method", "fast", "--model", str(model_file), "--data", args.test,
                             "--out", str(fast_dir), "--device", args.device]))
    diag["fast_c2st"] = fast_c2st_card(json.loads((fast_dir / "fast_c2st.json").read_text()))
    commands.append(run_cli(["evaluate", "c2st", "--method", "critic", "--model", str(model_file), "--data",
                             args.test, "--out", str(c2st_dir), "--splits", str(args.c2st_splits), "--steps",
                             str(args.c2st_steps), "--width", str(args.c2st_width), "--batch-size",
                             str(args.c2st_batch_size), "--lr", str(args.c2st_lr), "--device", args.device]))
    diag.update(critic_c2st_card(json.loads((c2st_dir / "c2st.json").read_text())))
    commands.append(run_cli(["evaluate", "reconstruct", "--model", str(model_file), "--data", args.test, "--train",
                             args.train, "--out", str(rec_dir), "--max-cells", str(args.reconstruct_cells),
                             "--steps", str(args.reconstruct_steps), "--restarts", "3", "--device", args.device]))
    rec = json.loads((rec_dir / "reconstruction.json").read_text())
    diag["reconstruction"] = {key: [round(v, 4) for v in rec[key]] for key in ("l2", "nn_l2", "nll")}
    diag["reconstruction"].update(cells=rec["cells"], steps=rec["steps"], restarts=rec["restarts"],
                                  format="[median, MAD]")
    diag["interpolation"], command = interpolation_diagnostics(model_file, args, work)
    commands.append(command)
    return diag, commands


def interpolation_diagnostics(model_file: Path, args, work: Path) -> tuple[dict, str]:
    """Growth along short → long interpolations, straight and through a grown cell; the command."""
    interp = work / "interp.tif"
    command = run_cli(["interpolate", "--model", str(model_file), "--out", str(interp), "--frames", "16",
                       "--measure", str(args.interpolation_pairs), "--device", args.device])
    growth = json.loads(interp.with_suffix(".growth.json").read_text())
    return {"median_rho": round(growth["median_rho"], 3),
            "median_rho_through_grown": round(growth["median_rho_through_grown"], 3),
            "grown_fraction": growth["grown_fraction"], "pairs": growth["pairs"], "frames": growth["frames"],
            "method": growth["method"]}, command


def interpolation_line(growth: dict) -> str:
    line = (f"Growth along short → long interpolations ({growth['pairs']} pairs of {growth['frames']} frames): median "
            f"Spearman ρ between frame and red length {growth['median_rho']:.2f} straight")
    if "median_rho_through_grown" in growth:
        line += (f", {growth['median_rho_through_grown']:.2f} through a grown cell (a middle anchor "
                 f"{growth['grown_fraction']:.0%} of the way to the long cell's length: grow, then divide)")
    return line + "."


def critic_c2st_card(body: dict) -> dict:
    """The card's part of a critic C2ST's JSON: median and MAD per protein, the budget and its trust."""
    s = body["settings"]
    return {"c2st": {name: {"median": round(r["median"], 3), "mad": round(r["mad"], 3)}
                     for name, r in body["scores"].items()},
            "c2st_settings": {"steps": s["steps"], "splits": s["splits"], "critic_width": s["width"],
                              "batch_size": s["batch_size"], "lr": s["lr"], "algorithm": s["algorithm"]},
            "c2st_trust": body["trust"]}


def fast_c2st_card(body: dict) -> dict:
    """The card's part of a fast feature test's JSON: accuracy and p per protein, and its trust."""
    scores = {name: {"accuracy": round(r["accuracy"], 3), "p_value": round(r["p_value"], 4), "cells": r["n"],
                     "controls_pass": r["controls_pass"]} for name, r in body["scores"].items()}
    return {"scores": scores, "trust": body["trust"], "settings": {k: body["settings"][k] for k in (
        "feature_iterations", "feature_width", "permutations", "max_cells")}}


def em_diagnostics(model_file: Path, args, work: Path, montage: Path) -> tuple[dict, list[str]]:
    """The EM report's JSON, plus its table (measure, real, generated, paper) for the Markdown card."""
    import shutil

    out = work / "em"
    argv = ["evaluate", "em", "--model", str(model_file), "--data", args.vnc, "--out", str(out),
            "--device", args.device, *shlex.split(args.em_options)]
    command = run_cli(argv)
    shutil.copy(out / "em_pairs.png", montage)
    with open(out / "em_report.csv", newline="") as f:
        table = list(csv.DictReader(f))
    with open(out / "em_calibration.csv", newline="") as f:
        calibration = list(csv.DictReader(f))
    return {"report": json.loads((out / "em_report.json").read_text()), "table": table,
            "calibration": calibration}, [command]


def c2st_lines(diag: dict) -> list[str]:
    """The fast feature test's table, then the paper's critic C2ST with its trust status."""
    lines = []
    if "fast_c2st" in diag:
        fast = diag["fast_c2st"]
        lines += ["Fast feature test (leave-one-out accuracy of a linear classifier on the features of a network "
                  "trained once on the held-out cells; 0.5 = indistinguishable; permutation p-value):", "",
                  *([f"Cells: {fast['data']}.", ""] if "data" in fast else []),
                  f"Trust: {trust_line(fast['trust'])}", "",
                  "| protein | accuracy | p | cells a side | controls |", "|---|---:|---:|---:|---|"]
        lines += [f"| {p} | {r['accuracy']:.3f} | {r['p_value']:.3g} | {r['cells']} | "
                  f"{'passed' if r['controls_pass'] else 'FAILED'} |" for p, r in fast["scores"].items()]
        lines.append("")
    s = diag["c2st_settings"]
    extra = f", batch {s['batch_size']}, learning rate {s['lr'] or 'the reference'}" if "batch_size" in s else ""
    lines += [f"The paper's critic C2ST (WGAN-GP critic, {s['splits']} splits × {s['steps']} steps, width "
              f"{s['critic_width']}{extra}; median ± MAD over splits; 0 = indistinguishable from held-out cells):",
              ""]
    if "c2st_trust" in diag:
        lines += [f"Trust: {trust_line(diag['c2st_trust'])}", ""]
    lines += ["| protein | median | MAD |", "|---|---:|---:|"]
    lines += [f"| {p} | {r['median']:.2f} | {r['mad']:.2f} |" for p, r in diag["c2st"].items()]
    return lines


def trust_line(trust: dict) -> str:
    from napari_biogans.evaluation.trust import Trust

    return Trust.from_dict(trust).line()


def markdown_card(card: dict) -> str:
    lines = [f"# {card['name']}", ""]
    if card.get("simulated_training_data"):
        lines += [f"**{SIMULATED_NOTE[0].upper() + SIMULATED_NOTE[1:]}.**", ""]
    lines += [card["summary"], "", "## Training", "",
              f"- data: {card['data'].get('description')} ({card['data'].get('cells', card['data'].get('sections'))} "
              f"{'cells' if 'cells' in card['data'] else 'sections'}; SHA-256 `{card['data'].get('sha256', '')[:16]}…`)",
              f"- architecture: `{json.dumps(card.get('config') or card.get('image_generator'))}`",
              f"- objective: {card.get('objective', card.get('mode'))}; iterations: {card['iterations']}",
              f"- device: {card['device']}; wall time: {card['training_seconds']} s"
              + (f"; CPU time: {card['training_cpu_seconds'] / 3600:.2f} h of one core" if card.get("training_cpu_seconds")
                 else ""),
              f"- weights: float16, SHA-256 `{card['sha256']}`; largest change of a seeded uint8 sample from the "
              f"float32 weights: {card['half_precision_max_change']}",
              "", "```", card["training_command"], "```", "", "## Diagnostics (measured)", ""]
    diag = card["diagnostics"]
    if card["kind"] == "generator":
        if "recognition" in diag:
            from napari_biogans.evaluation.fast_test import RECOGNITION_BAR

            rec = diag["recognition"]
            lines += [f"Recognition (the catalogue's bar: `{rec['command']}`): the share of {rec['cells']} generated "
                      f"cells per protein that the fast test's feature network, a protein classifier trained on "
                      f"held-out real cells ({rec['feature_net_accuracy']:.0%} accurate on its own held-out ones), "
                      f"calls that protein, beside its recall on held-out real cells; a catalogue model reaches "
                      f"{RECOGNITION_BAR:g} × the real recall on every protein.", "",
                      "| protein | generated | real | passes |", "|---|---:|---:|---|"]
            lines += [f"| {p} | {r['generated']:.3f} | {r['real']:.3f} | {'yes' if r['passes'] else '**no**'} |"
                      for p, r in rec["proteins"].items()]
            lines.append("")
        lines += c2st_lines(diag)
        rec = diag["reconstruction"]
        lines += ["", f"Reconstruction of {rec['cells']} held-out cells: L2 {rec['l2'][0]:.3f} ± {rec['l2'][1]:.3f} "
                  f"(median ± MAD) against the nearest training cell's {rec['nn_l2'][0]:.3f} ± {rec['nn_l2'][1]:.3f}; "
                  f"NLL of the codes {rec['nll'][0]:.1f}.", "",
                  interpolation_line(diag["interpolation"])]
    elif diag:
        lines += ["Measured on the real validation sections against generated label/image pairs (`biogans "
                  "evaluate em`; the paper's numbers where it gives one). *trusted*: the measure passed its "
                  "controls at this budget (see the calibration table below).", "",
                  "| measure | real | generated | paper (real) | paper (generated) | trusted |",
                  "|---|---:|---:|---:|---:|---|"]
        for row in diag["table"]:
            cells = [row[k] and f"{float(row[k]):.4g}" or "—" for k in ("real", "generated", "paper_real",
                                                                          "paper_generated")]
            trusted = {"True": "yes", "False": "**no**"}.get(row.get("trusted", ""), "—")
            if "described, not tested" in row.get("note", ""):  # a mean the paper reports, no χ² of its own
                trusted += " described, not tested"
            lines.append(f"| {row['measure']} | " + " | ".join(cells) + f" | {trusted} |")
        if diag.get("calibration"):
            lines += ["", "Calibration (each diagnostic on controls with a known answer, at this run's budget):", "",
                      "| diagnostic | control | value | pass |", "|---|---|---:|---|"]
            lines += [f"| {r['diagnostic']} | {r['control']} | {format(float(r['value']), '.4g') if r['value'] else '—'} | "
                      f"{'pass' if r['passed'] == 'True' else '**FAIL**'} |" for r in diag["calibration"]]
    lines += ["", "Commands:", "", "```", *card["diagnostics_commands"], "```", "", "## Known limits", ""]
    lines += [f"- {limit}" for limit in card["known_limits"]]
    lines += ["", f"![samples]({card['montage']})", ""]
    return "\n".join(lines)


def merged_reports(folders: list[Path]) -> tuple[dict, list[str]]:
    """EM reports of several ``biogans evaluate em`` runs of one model, each with the parts the others
    skipped (a long C2ST beside a quick segmentation), as one diagnostics record; each folder holds
    ``em_report.json`` and the ``command.txt`` that made it."""
    from napari_biogans.evaluation.em_report import PARTS, calibration_rows, report_rows

    merged, commands = {}, []
    for folder in folders:
        report = json.loads((folder / "em_report.json").read_text())
        commands.append((folder / "command.txt").read_text().strip().replace(str(folder), "DIR"))
        if not merged:
            merged = report
            continue
        merged.update({part: report[part] for part in PARTS if part in report})
        merged["skipped"] = {k: v for k, v in merged["skipped"].items() if k in report["skipped"]}
        merged.setdefault("settings_of_parts", []).append(report["settings"])

    def as_csv(rows):  # the cells as em_report.csv holds them
        return [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows]

    return {"report": merged, "table": as_csv(report_rows(merged)),
            "calibration": as_csv(calibration_rows(merged))}, commands


def write_reference(target: Path, out: Path, name: str, kind: str) -> dict:
    """The model's seeded reference sample as ``out/NAME.reference.npz``; returns the card's entry for it."""
    from napari_biogans import reference_samples

    arrays = reference_samples.reference(target, kind)
    np.savez_compressed(out / f"{name}.reference.npz", **arrays)
    return {"file": f"{name}.reference.npz", "sha256": reference_samples.checksum(arrays),
            "made_by": "napari_biogans.reference_samples.reference"}


def remeasure(args) -> int:
    """New diagnostics for a published model: its card's ``diagnostics`` and commands and its Markdown card are
    rewritten (and an EM model's montage, when the diagnostics run here), and its reference sample is drawn again
    (sampling may have changed since); the weights and the training record stay. A fluorescence model re-measures
    only the growth along interpolations (the C2ST and reconstruction stay as published). ``--from-reports``
    (EM): merge finished runs instead of running one."""
    out = Path(args.out)
    target, card_path = out / f"{args.name}.safetensors", out / f"{args.name}.json"
    card = json.loads(card_path.read_text())
    started = time.perf_counter()
    if card["kind"] == "generator":  # the cheap measure only: growth along interpolations
        with tempfile.TemporaryDirectory() as tmp:
            growth, command = interpolation_diagnostics(target, args, Path(tmp))
            command = command.replace(tmp, "DIR")
        diag = {**card["diagnostics"], "interpolation": growth}
        commands = [command if " interpolate " in f" {c} " else c for c in card["diagnostics_commands"]]
        seconds = card.get("diagnostics_seconds")
    elif args.from_reports:
        diag, commands = merged_reports([Path(f) for f in args.from_reports])
        seconds = None
    else:
        with tempfile.TemporaryDirectory() as tmp:
            diag, commands = em_diagnostics(target, args, Path(tmp), out / f"{args.name}.png")
            commands = [c.replace(tmp, "DIR") for c in commands]
        seconds = round(time.perf_counter() - started, 1)
    model_file = diag.get("report", {}).get("model", {}).get("file", str(target))
    commands = [c.replace(model_file, args.name).replace(str(target), args.name) for c in commands]
    diag = json.loads(json.dumps(diag, default=str).replace(model_file, args.name).replace(str(target), args.name))
    card.update(diagnostics=diag, diagnostics_commands=commands, diagnostics_seconds=seconds,
                reference_sample=write_reference(target, out, args.name, card["kind"]))
    if args.limit:  # the known limits as they stand after the new measurement
        card["known_limits"] = args.limit
    if args.summary:
        card["summary"] = args.summary
    card_path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    (out / f"{args.name}.md").write_text(markdown_card(card))
    print(f"re-measured {args.name}: cards {card_path.name} / {args.name}.md")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder (generator.safetensors or em_model.safetensors)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--training-command", required=True, help="the exact command that trained the run")
    parser.add_argument("--summary", default="", help="one paragraph for people")
    parser.add_argument("--training-cpu-seconds", type=float, help="CPU time of the training (e.g. /usr/bin/time's "
                        "user + system over all legs); the wall time comes from the run's losses.csv")
    parser.add_argument("--limit", action="append", default=[], help="a known limit (repeatable; with --remeasure they replace the card's)")
    parser.add_argument("--test", help="held-out cells (LIN test split) for the fluorescence diagnostics")
    parser.add_argument("--train", help="training cells (nearest-neighbour baseline)")
    parser.add_argument("--vnc", help="VNC stack folder with the validation sections (EM diagnostics)")
    parser.add_argument("--em-options", default="", help="extra options for biogans evaluate em")
    from napari_biogans.evaluation.calibrate import CPU_CRITIC  # the budget calibrated to pass on a CPU

    parser.add_argument("--c2st-steps", type=int, default=CPU_CRITIC["steps"])
    parser.add_argument("--c2st-splits", type=int, default=CPU_CRITIC["splits"])
    parser.add_argument("--c2st-width", type=int, default=CPU_CRITIC["width"])
    parser.add_argument("--c2st-batch-size", type=int, default=CPU_CRITIC["batch_size"])
    parser.add_argument("--c2st-lr", type=float, default=CPU_CRITIC["lr"])
    parser.add_argument("--reconstruct-cells", type=int, default=60)
    parser.add_argument("--reconstruct-steps", type=int, default=20)
    parser.add_argument("--interpolation-pairs", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(PRETRAINED))
    parser.add_argument("--remeasure", action="store_true", help="re-run the diagnostics of the published model --name "
                        "in --out (fluorescence: the interpolation measure only) and rewrite its cards (weights and "
                        "training record untouched)")
    parser.add_argument("--from-reports", nargs="+", default=[], help="with --remeasure: folders of finished "
                        "'biogans evaluate em' runs (em_report.json, command.txt) to merge instead of running one")
    args = parser.parse_args()
    if args.remeasure:
        return remeasure(args)

    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{args.name}.safetensors"
    source = run / "generator.safetensors"
    is_em = not source.is_file()
    for stale in (out / f"{args.name}.json", out / f"{args.name}.md"):  # a replaced model's cards (git keeps them)
        stale.unlink(missing_ok=True)  # the old card's SHA-256 would refuse the new weights
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if is_em:
            from napari_biogans.models.em_inference import load_em_model

            source = run / "em_model.safetensors"
            tensors, meta = checkpoints.load(source, kind="em-generator")
            if meta.get("dtype") != "float16":
                raise SystemExit(f"{source}: train EM models with --half so that the model file is float16")
            target.write_bytes(source.read_bytes())
            load_em_model(target)  # refuses anything that would not load
            change = 0.0
            diag, commands = em_diagnostics(target, args, work, out / f"{args.name}.png") if args.vnc else ({}, [])
            montage_note = ""
        else:
            meta, change = publish_weights(source, target, args.name, {"training_command": args.training_command})
            diag, commands = fluorescence_diagnostics(target, args, work)
            montage_note = write_montage(target, out / f"{args.name}.png")
    reference = write_reference(target, out, args.name, "em-generator" if is_em else "generator")
    # the commands as a reader would type them: the model by catalogue name, outputs in DIR
    commands = [c.replace(str(target), args.name).replace(str(work), "DIR") for c in commands]
    diag = json.loads(json.dumps(diag, default=str).replace(str(target), args.name))  # no local paths in cards
    card = {
        **{k: v for k, v in meta.items() if k not in ("format",)},
        "name": args.name,
        "kind": "em-generator" if is_em else "generator",
        "summary": args.summary,
        "sha256": checkpoints.file_sha256(target),
        "training_command": args.training_command,
        "training_seconds": training_time(run),
        **({"training_cpu_seconds": args.training_cpu_seconds} if args.training_cpu_seconds else {}),
        "half_precision_max_change": change,
        "diagnostics": diag,
        "diagnostics_commands": commands,
        "diagnostics_seconds": round(time.perf_counter() - started, 1),
        "montage": f"{args.name}.png",
        "montage_note": montage_note,
        "reference_sample": reference,
        "known_limits": ([SIMULATED_NOTE] if meta.get("simulated_training_data") else []) + args.limit,
    }
    (out / f"{args.name}.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    (out / f"{args.name}.md").write_text(markdown_card(card))
    print(f"published {target} ({target.stat().st_size / 1e6:.1f} MB) with cards {args.name}.json / .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
