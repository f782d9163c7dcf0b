"""Train, evaluate and ship the VNC segmenter (``pretrained/vnc-segmenter``).

    # train in the background; the learning-rate schedule ends with --time-budget (seconds, all sessions)
    nice -n 10 env OMP_NUM_THREADS=1 nohup python scripts/train_segmenter.py train --threads 1 \\
        --data ../shared/data/vnc/stack1 --run /work/runs/segmenter/seg8 --width 8 --time-budget 3000 &
    # run it again with the same --run to resume; --time-limit stops a session early (saved)
    # mean IU on the validation sections 10-19 at full size, then the shipped file and its cards
    python scripts/train_segmenter.py ship --data ../shared/data/vnc/stack1 --run /work/runs/segmenter/seg8 \\
        --out pretrained/vnc-segmenter

On a 2-core CPU shared with other jobs use one thread: with two, each waits for the other at every
layer whenever the scheduler parks one of them (seen here: two threads made under 30 steps in 88 CPU
seconds, one thread makes a step of the default settings in about 0.25 CPU seconds).

The run folder holds ``state.pt`` (model, optimiser and RNG state, read with ``weights_only=True``),
``run.json`` (the arguments and the CPU/wall seconds spent so far) and ``log.csv``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def train(args) -> None:
    import torch

    from napari_biogans import jobs
    from napari_biogans.data.em import read_sections
    from napari_biogans.evaluation.em_metrics import train_segmenter

    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest kernels
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    info_path, state_path = run / "run.json", run / "state.pt"
    settings = {k: getattr(args, k) for k in ("iterations", "crop", "batch_size", "width", "levels", "lr", "seed",
                                              "sections", "time_budget")}
    info = json.loads(info_path.read_text()) if info_path.is_file() else {"settings": settings, "cpu_s": 0.0,
                                                                            "wall_s": 0.0, "sessions": []}
    # a resumed run may get a longer (or shorter) time budget; anything else would be another run
    fixed = {k: v for k, v in settings.items() if k != "time_budget"}
    if {k: v for k, v in info["settings"].items() if k != "time_budget"} != fixed:
        sys.exit(f"{run}: was started with {info['settings']}, not {settings}; use another --run")
    info["settings"]["time_budget"] = settings["time_budget"]
    state = torch.load(state_path, weights_only=True, map_location=args.device) if state_path.is_file() else None
    images, labels = read_sections(args.data, args.sections)
    stop, started, cpu0, wall0 = jobs.StopFlag(), time.time(), _cpu_seconds(), (info["wall_s"], info["cpu_s"])
    device = args.device

    def save(snapshot):
        tmp = state_path.with_name(".state.pt.partial")
        torch.save(snapshot, tmp)
        os.replace(tmp, state_path)
        info["wall_s"] = wall0[0] + time.time() - started
        info["cpu_s"] = wall0[1] + _cpu_seconds() - cpu0
        info["step"] = snapshot["step"]
        info["device"] = str(device)
        info_path.write_text(json.dumps(info, indent=1))

    log = open(run / "log.csv", "a")

    def on_update(update):
        log.write(f"{update.done},{update.payload['loss']:.4f},{update.payload['lr']:.2e},{time.time() - started:.2f}\n")
        log.flush()
        if args.time_limit and time.time() - started > args.time_limit:
            stop.set()

    info["sessions"].append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "device": str(device),
                             "threads": args.threads})
    job = train_segmenter(images, labels, args.iterations, args.crop, args.batch_size, args.width, args.levels,
                          args.lr, device, args.seed, state=state, save=save, save_every=args.save_every, stop=stop,
                          time_budget=args.time_budget or None)
    jobs.run(job, on_update)
    print(f"{run}: step {info.get('step')} of {args.iterations}, {info['cpu_s']:.0f} CPU s, {info['wall_s']:.0f} s")


def _load_run(run: Path):
    import torch

    from napari_biogans.models.segmenter import SegmenterUNet

    info = json.loads((run / "run.json").read_text())
    s = info["settings"]
    model = SegmenterUNet(width=s["width"], levels=s["levels"])
    model.load_state_dict(torch.load(run / "state.pt", weights_only=True, map_location="cpu")["model"])
    return model.eval(), info


def evaluate(model, data, sections, device="cpu") -> dict:
    """Mean IU, per-class IU and NLL of ``model`` on ``sections`` at full size."""
    from napari_biogans.data.em import read_sections
    from napari_biogans.evaluation.em_metrics import segmentation_scores

    images, labels = read_sections(data, sections)
    return segmentation_scores(model, images, labels, device)


def training_command(info: dict, data: str, run: str) -> str:
    s = info["settings"]
    return (f"nice -n 10 env OMP_NUM_THREADS=1 python scripts/train_segmenter.py train --data {data} --run {run} "
            f"--iterations {s['iterations']} --batch-size {s['batch_size']} --crop {s['crop']} --width {s['width']} "
            f"--levels {s['levels']} --lr {s['lr']} --seed {s['seed']} --threads 1 --time-budget {s.get('time_budget', 0):g}")


def markdown_card(card: dict) -> str:
    v = card["diagnostics"]["validation"]
    names = [card["label_codes"][str(i)] for i in range(3)]
    t = card["training"]
    lines = [f"# {card['name']}", "", card["summary"], "", "## Training", "",
             f"- data: {card['data']['description']}, sections {card['data']['sections'][0]:02d}-"
             f"{card['data']['sections'][-1]:02d}",
             f"- architecture: `{json.dumps(card['segmenter'])}` ({card['parameters']:,} parameters)",
             f"- objective: class-weighted cross-entropy + soft Dice; random {card['train_config']['crop']}² crops, "
             "flips, 90° turns, contrast jitter; Adam, cosine learning rate",
             f"- iterations: {card['iterations']} (batch {card['train_config']['batch_size']})",
             f"- device: {card['device']}; {t['cpu_s'] / 3600:.2f} CPU hours over {t['wall_s'] / 3600:.2f} h wall "
             "(a 2-core CPU shared with other jobs)",
             f"- weights: float16, {card['bytes'] / 1e6:.1f} MB, SHA-256 `{card['sha256']}`",
             "", "```", card["training_command"], "```", "", "## Diagnostics (measured)", "",
             f"Segmentation of the real validation sections {v['sections'][0]}-{v['sections'][-1]} at full size "
             f"({v['seconds']} s on {v['device']}):", "",
             "| measure | this model | paper's segmenter |", "|---|---:|---:|",
             f"| mean IU | {v['mean_iu']:.3f} | 0.883 |"]
    lines += [f"| IU {name} | {iu:.3f} | — |" for name, iu in zip(names, v["iu"])]
    lines += [f"| NLL (nats per pixel) | {v['nll']:.3f} | 0.112 |", "", "Commands:", "", "```",
              *card["diagnostics_commands"], "```", "", "## Known limits", ""]
    lines += [f"- {limit}" for limit in card["known_limits"]]
    return "\n".join(lines) + "\n"


def ship(args) -> None:
    """The shipped file (float16), its JSON card (with the validation scores of the float16 weights) and
    its Markdown card, and the reference sample the tests compare with."""
    import torch

    from napari_biogans import checkpoints, reference_samples
    from napari_biogans.data.em import LABEL_NAMES, read_sections
    from napari_biogans.evaluation.em_metrics import recalibrate_batchnorm
    from napari_biogans.models.segmenter import MODEL_KIND
    from napari_biogans.models.segmenter_file import load_segmenter, save_segmenter

    torch.set_num_threads(args.threads)
    model, info = _load_run(Path(args.run))
    images, _ = read_sections(args.data, info["settings"]["sections"])
    recalibrate_batchnorm(model, images, device=args.device, seed=info["settings"]["seed"])
    out = Path(args.out)
    name = out.name
    path = save_segmenter(out.with_suffix(".safetensors"), model, {
        "name": name, "label_codes": {str(k): v for k, v in LABEL_NAMES.items()},
        "data": {"description": "VNC stack1 (Gerhard et al., CC BY-NC-SA 3.0)", "sections": info["settings"]["sections"]},
        "train_config": info["settings"],
    })
    shipped, _ = load_segmenter(path, args.device)  # the float16 weights, as users get them
    t0 = time.time()
    scores = evaluate(shipped, args.data, args.val_sections, args.device)
    scores.update(seconds=round(time.time() - t0, 1), device=args.device, sections=list(args.val_sections))
    tensors, meta = checkpoints.load(path)
    checkpoints.save(path, tensors, {**meta, "validation": scores})  # the file itself says how well it segments
    arrays = reference_samples.reference(path, MODEL_KIND)
    np.savez_compressed(out.with_name(f"{name}.reference.npz"), **arrays)
    meta = checkpoints.read_card(path)
    card = {**{k: v for k, v in meta.items() if k != "format"},
            "summary": "A small U-Net that labels VNC ssTEM sections as cytoplasm, membrane and mitochondria: the "
                       "segmenter of `biogans evaluate em` (Table 2 of the SGAN paper), trained once and shipped "
                       "instead of a weak one trained per evaluation.",
            "sha256": checkpoints.file_sha256(path), "bytes": path.stat().st_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "iterations": info.get("step"), "device": info.get("device"),
            "training": {k: info.get(k) for k in ("cpu_s", "wall_s", "sessions")},
            "training_seconds": round(info.get("wall_s", 0), 1),
            "training_command": training_command(info, "../shared/data/vnc/stack1", "/work/runs/segmenter/RUN"),
            "diagnostics": {"validation": scores},
            "diagnostics_commands": [f"python scripts/train_segmenter.py ship --data ../shared/data/vnc/stack1 --run RUN "
                                     f"--out pretrained/{name} --threads {args.threads}"],
            "reference_sample": {"file": f"{name}.reference.npz", "sha256": reference_samples.checksum(arrays),
                                 "made_by": "napari_biogans.reference_samples.reference"},
            "known_limits": args.limit or ["trained on the 10 labelled training sections of one stack: other tissue, "
                                           "contrast or resolution needs retraining"]}
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown_card(card))
    print(json.dumps(scores, indent=1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["train", "evaluate", "ship"])
    parser.add_argument("--data", required=True, help="VNC stack1 folder (raw/, membranes/, mitochondria/)")
    parser.add_argument("--run", required=True, help="run folder (state, log)")
    parser.add_argument("--sections", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--val-sections", type=int, nargs="+", default=list(range(10, 20)))
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--time-limit", type=float, default=0,
                        help="seconds of this session; saves and stops after it, to resume later (0: none)")
    parser.add_argument("--time-budget", type=float, default=0,
                        help="seconds of training in all: the learning-rate schedule ends with it (0: steps only)")
    parser.add_argument("--out", default="pretrained/vnc-segmenter", help="ship: file stem to write")
    parser.add_argument("--limit", action="append", default=[], help="ship: a known limit for the card (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args)
    elif args.command == "evaluate":
        import torch

        torch.set_num_threads(args.threads)
        from napari_biogans.data.em import read_sections
        from napari_biogans.evaluation.em_metrics import recalibrate_batchnorm

        model, info = _load_run(Path(args.run))
        recalibrate_batchnorm(model, read_sections(args.data, info["settings"]["sections"])[0], device=args.device)
        print(json.dumps(evaluate(model, args.data, args.val_sections, args.device), indent=1))
    else:
        ship(args)


if __name__ == "__main__":
    main()
