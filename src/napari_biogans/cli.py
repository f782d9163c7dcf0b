"""The ``biogans`` command line: the same core functions the napari widgets call."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import __version__
from .training import TRAIN_MODELS

SIMULATED_RELEASE = "LIN_Simulated_WT_size-{h}-{w}_{role}"
TEST_SEED_OFFSET = 10_000  # the test split is drawn from a disjoint seed so no cell repeats


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 48x80, got {text!r}") from None
    return h, w


def _sections(text: str) -> tuple[int, ...]:
    """Section numbers such as ``0-9`` or ``0,2,5-7``."""
    out = []
    try:
        for part in text.split(","):
            first, _, last = part.partition("-")
            out += range(int(first), int(last or first) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sections such as 0-9 or 0,2,5-7, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"no sections in {text!r}")
    return tuple(out)


def cmd_simulate(args) -> int:
    from .data import lin
    from .data.simulator import simulate_stack

    out = Path(args.out)
    proteins = args.proteins.split(",") if args.proteins else None
    if args.fields:
        from .data.simulator import write_simulated_fields

        files = write_simulated_fields(out, args.fields, args.seed, args.field_size, args.cells_per_field,
                                       proteins or ("Tea1",), args.z_planes, args.bit_depth)
        print(f"{len(files)} simulated fields of view with ground-truth labels -> {out}")
        return 0
    h, w = args.size
    counts = {"train": args.cells_per_class, "test": args.test_cells_per_class or args.cells_per_class}
    for role, n in counts.items():
        seed = args.seed + (TEST_SEED_OFFSET if role == "test" else 0)
        stack = simulate_stack(n_per_class=n, proteins=proteins, seed=seed, size=(h, w))
        folder = lin.write_lin_folder(stack, out / SIMULATED_RELEASE.format(h=h, w=w, role=role))
        print(f"{role}: {len(stack)} simulated cells of {len(stack.class_names)} proteins -> {folder}")
    return 0


def cmd_prepare_cells(args) -> int:
    from functools import partial

    from . import jobs
    from .data import fields, prepare

    if args.image and (args.red or args.green):
        raise ValueError("give --image (with --red-channel/--green-channel) or --red and --green, not both")
    params = prepare.PrepareParams(size=args.size, normalise=args.normalise, mask_outside=not args.no_mask)
    if args.image and Path(args.image).is_dir():
        images = fields.find_fields(args.image)
        if not images:
            raise ValueError(f"{args.image}: no .tif fields of view in this folder")
        if args.labels and Path(args.labels).is_file():
            raise ValueError(f"{args.labels}: with a folder of fields, --labels must be a folder of label images")
    elif args.image:
        images = [Path(args.image)]
    elif args.red and args.green:
        images = [None]
    else:
        raise ValueError("give --image FOV.tif (or a folder of them), or --red R.tif and --green G.tif")
    options = {"red_channel": args.red_channel, "green_channel": args.green_channel, "project_how": args.project}
    loaders = [partial(fields.read_field, image=image, red=args.red, green=args.green, pixel_size_um=args.pixel_size,
                       labels=fields.labels_for(image or args.red, args.labels), **options) for image in images]
    on_update, close = jobs.terminal_progress(args.quiet)
    try:
        results = jobs.run(prepare.prepare_fields(loaders, params, args.pixel_size), on_update)
    finally:
        close()
    print(f"{'field':<40} {'cells':>6} {'accepted':>9}")
    for result in results:
        print(f"{Path(result.source).name[:40]:<40} {len(result.records):>6} {len(result.accepted):>9}")
    for reason, count in prepare.rejection_summary(results).items():
        print(f"  {reason:<50} {count:>6}")
    written = prepare.write_prepared(results, args.out, args.protein, args.split, args.seed)
    print(f"-> {Path(args.out)} ({', '.join(p.name for p in written.values())})")
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


def _time_is_up(deadline: float | None, device) -> bool:
    """Past the wall-clock deadline? Under torchrun every rank gets rank 0's answer, so all stop together."""
    import torch

    up = deadline is not None and time.monotonic() > deadline
    dist = torch.distributed
    if deadline is not None and dist.is_available() and dist.is_initialized():
        flag = torch.tensor([float(up)], device=device)
        dist.broadcast(flag, src=0)
        up = bool(flag.item())
    return up


def _drive(trainer, total: int, shown_losses, quiet: bool = False, time_limit_min: float | None = None) -> int:
    """Run a trainer's events behind a terminal progress bar; Ctrl-C saves and exits with 130.

    ``shown_losses`` names the losses on the bar (None: the first three). ``time_limit_min``:
    stop, save and exit normally after this many minutes (checked at every logged iteration).
    """
    from tqdm import tqdm

    deadline = time.monotonic() + 60 * time_limit_min if time_limit_min else None
    bar = tqdm(total=total, initial=trainer.iteration, disable=quiet, unit="it")
    try:
        for event in trainer.run():
            if not event.done and _time_is_up(deadline, trainer.device):
                trainer.request_stop()
            bar.update(event.iteration - bar.n)
            if event.losses:
                keys = shown_losses or list(event.losses)[:3]
                bar.set_postfix({k: f"{event.losses[k]:.3g}" for k in keys if k in event.losses})
            if event.done and not quiet:
                bar.close()
                print(event.message)
    except KeyboardInterrupt:
        bar.close()
        trainer.save()
        print(f"interrupted at iteration {trainer.iteration}; saved the training state in {trainer.run_dir}; "
              "resume with --resume")
        return 130
    return 0


def _run_distributed(device: str, body) -> int:
    """``body()``; under torchrun (WORLD_SIZE > 1) inside the process group (NCCL on GPUs, gloo on
    CPU), which every rank leaves together."""
    import torch

    dist = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return body()
    dist.init_process_group("nccl" if torch.cuda.is_available() and device != "cpu" else "gloo")
    try:
        code = body()
        dist.barrier()  # rank 0 may still be writing; a rank that tears gloo down early aborts
    finally:
        dist.destroy_process_group()
    # gloo's worker threads can still abort the interpreter's shutdown (SIGABRT after a clean run): leave now
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_train(args) -> int:
    from .training.trainer import TrainConfig, Trainer

    def train() -> int:
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
        return _drive(trainer, config.iterations, ("critic", "generator"), quiet, args.time_limit)

    return _run_distributed(args.device, train)


def cmd_sample(args) -> int:
    from . import checkpoints
    from .sampling import sample, write_samples

    path = checkpoints.resolve_model(args.model)
    generator, meta = checkpoints.load_generator(path)
    meta.setdefault("name", path.stem)
    meta.setdefault("sha256", checkpoints.file_sha256(path))
    proteins = args.proteins.split(",") if args.proteins else None
    attribute = None
    if args.longer:
        from .evaluation.profiling import length_attribute

        found = length_attribute(generator, seed=args.seed)
        attribute = ("long minus short", found["vector"], args.longer)
        print(f"latent arithmetic: {args.longer} × (long minus short), the mean code of generated cells "
              f"~{found['long_px']:.0f} px long minus that of cells ~{found['short_px']:.0f} px long")
    samples = sample(generator, meta, n=args.n, seed=args.seed, proteins=proteins, red_seed=args.red_seed,
                     attribute=attribute)
    write_samples(samples, args.out)
    print(f"{args.n} cells ({', '.join(samples.channel_names)}) from {path.name} -> {args.out}")
    return 0


def _model(name, device):
    from . import checkpoints
    from .devices import resolve_device

    path = checkpoints.resolve_model(name)
    generator, meta = checkpoints.load_generator(path, device=resolve_device(device))
    meta.setdefault("name", path.stem)
    meta.setdefault("sha256", checkpoints.file_sha256(path))
    return generator, meta


def _bar(total, desc):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step")

    def update(done, _total):
        bar.update(done - bar.n)

    return bar, update


def _write_json(path: Path, data) -> None:
    import json

    path.write_text(json.dumps(data, indent=2))


def cmd_evaluate_em(args) -> int:
    from . import checkpoints
    from .evaluation.em_report import EMEvalSettings, evaluate_em, report_rows, write_report
    from .training.em_trainer import load_em_model

    path = checkpoints.resolve_model(args.model)
    model = load_em_model(path, device=args.device)
    settings = EMEvalSettings(
        train_sections=args.sections_train, validation_sections=args.sections_val, n_generated=args.generated,
        size=args.size, segmenter_iterations=args.segmenter_iterations, segmenter_width=args.segmenter_width,
        c2st_steps=args.c2st_steps, c2st_width=args.width, c2st_batch_size=args.batch_size,
        c2st_algorithm=args.algorithm, c2st_lr=args.lr, birthday_batch_sizes=tuple(args.birthday_batch_sizes),
        birthday_repeats=args.birthday_repeats, skip=tuple(args.skip), seed=args.seed,
    )
    bars = []

    def progress(done, total):
        if not bars:  # the bar starts once the inputs are read: a bad input shows its error alone
            bars.append(_bar(total, "EM evaluation"))
        bars[0][1](done, total)

    evaluation = evaluate_em(model, args.data, settings, extra_real=args.extra_real, progress=progress)
    for bar, _ in bars:
        bar.close()
    evaluation.results["model"].update(file=str(path), sha256=checkpoints.file_sha256(path))
    files = write_report(evaluation, args.out)
    for row in report_rows(evaluation.results):
        paper = "" if row["paper_generated"] is None else f"   (paper {row['paper_generated']:.3g})"
        cells = ["—" if v is None else f"{v:.4g}" for v in (row["real"], row["generated"])]
        print(f"{row['measure']:>32}: real {cells[0]:>9}, generated {cells[1]:>9}{paper}")
    for part, reason in evaluation.results["skipped"].items():
        print(f"{part}: {reason}")
    print(f"report -> {', '.join(str(f) for f in files.values())}")
    return 0


def cmd_evaluate(args) -> int:
    import csv

    import numpy as np

    from .devices import resolve_device
    from .evaluation import plots

    if args.what == "em":  # reads every input before it writes anything
        return cmd_evaluate_em(args)
    if args.what in ("fid", "features"):
        return cmd_evaluate_features(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    if args.what == "c2st":
        from .evaluation.c2st import generator_c2st

        generator, meta = _model(args.model, args.device)
        test = _load_cells(args.data, None)
        names = meta["class_names"]
        bar, update = _bar(args.steps, "C2ST")
        report = generator_c2st(generator, test, names, n_splits=args.splits, device=device, steps=args.steps,
                                batch_size=args.batch_size, test_batches=args.test_batches, width=args.width,
                                algorithm=args.algorithm, lr=args.lr, progress=update)
        bar.close()
        report_meta = {"model": meta["name"], "data": test.description, "algorithm": args.algorithm,
                       "steps": args.steps, "splits": args.splits, "device": str(device)}
        _write_json(out / "c2st.json", {"settings": report_meta, "scores": report})
        with open(out / "c2st.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["protein", "median", "mad", "mean", "std", *[f"split{s}" for s in range(args.splits)]])
            for name, r in report.items():
                writer.writerow([name, r["median"], r["mad"], r["mean"], r["std"], *r["scores"]])
        plots.save_figure(plots.c2st_scores, out / "c2st.png", report=report)
        for name, r in report.items():
            print(f"{name:>10}: median {r['median']:.2f} ± {r['mad']:.2f} (MAD), mean {r['mean']:.2f} ± {r['std']:.2f}")
    elif args.what == "reconstruct":
        import tifffile

        from .evaluation.reconstruction import median_mad, nearest_neighbour_l2, reconstruct

        generator, meta = _model(args.model, args.device)
        names = meta["class_names"]
        test = _load_cells(args.data, names if generator.n_classes > 1 else None)
        train = _load_cells(args.train, names if generator.n_classes > 1 else None) if args.train else None
        if args.max_cells and len(test) > args.max_cells:
            keep = np.random.default_rng(0).choice(len(test), args.max_cells, replace=False)
            test = test.subset(np.sort(keep))
        slots = test.class_index if generator.n_classes > 1 else np.zeros(len(test), dtype=int)
        bar, update = _bar(args.steps * 20 * (2 if args.mode == "separable" else 1), "L-BFGS")
        result = reconstruct(generator, test.as_float(), slots, mode=args.mode, restarts=args.restarts,
                             steps=args.steps, device=device, progress=update)
        bar.close()
        nn = None
        if train is not None:
            nn = np.zeros(len(test))
            for label in np.unique(test.class_index):
                rows = test.class_index == label
                nn[rows] = nearest_neighbour_l2(test.images[rows], train.images[train.class_index == label])[0]
        with open(out / "reconstruction.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "protein", "l2", "nll", "nll_start", "nn_l2"])
            for i in range(len(test)):
                writer.writerow([test.file_names[i], test.class_names[test.class_index[i]], result.l2[i],
                                 result.nll[i], result.nll_start[i], "" if nn is None else nn[i]])
        from .data.lin import to_uint8

        tifffile.imwrite(out / "reconstructions.tif", to_uint8(result.images), metadata={"axes": "QCYX"})
        plots.save_figure(plots.reconstruction_scatter, out / "reconstruction.png", l2=result.l2, nll=result.nll,
                          nn_l2=nn, nz=generator.nz)
        summary = {"l2": median_mad(result.l2), "nll": median_mad(result.nll),
                   "nn_l2": None if nn is None else median_mad(nn), "cells": len(test), "mode": args.mode,
                   "restarts": args.restarts, "steps": args.steps, "model": meta["name"], "device": str(device)}
        _write_json(out / "reconstruction.json", summary)
        print(f"L2 {summary['l2'][0]:.3f} ± {summary['l2'][1]:.3f}, NLL {summary['nll'][0]:.0f} ± {summary['nll'][1]:.0f}"
              + ("" if nn is None else f", nearest neighbour L2 {summary['nn_l2'][0]:.3f} ± {summary['nn_l2'][1]:.3f}"))
    else:  # real-vs-real
        from .evaluation.c2st import real_vs_real, summarize

        train, test = _load_cells(args.train, None), _load_cells(args.data, None)
        names = args.proteins.split(",") if args.proteins else list(test.class_names)
        jobs = args.splits * len(names) ** 2
        bar, update = _bar(jobs, "critic pairs")
        scores = real_vs_real(train, test, names, n_splits=args.splits, device=device, steps=args.steps,
                              batch_size=args.batch_size, test_batches=args.test_batches, width=args.width,
                              algorithm=args.algorithm, lr=args.lr, progress=update)
        bar.close()
        mean = np.nanmean(scores, axis=0)
        with open(out / "real_vs_real.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["A \\ B", *names])
            for i, name in enumerate(names):
                writer.writerow([name, *[f"{v:.3f}" for v in mean[i]]])
        _write_json(out / "real_vs_real.json", {
            "names": names, "mean": mean.tolist(), "std": np.nanstd(scores, axis=0).tolist(),
            "scores": scores.tolist(), "diagonal": summarize(np.diagonal(scores, axis1=1, axis2=2).ravel()),
            "settings": {"splits": args.splits, "steps": args.steps, "width": args.width, "algorithm": args.algorithm,
                         "lr": args.lr,
                         "batch_size": args.batch_size, "device": str(device)},
        })
        plots.save_figure(plots.score_matrix, out / "real_vs_real.png", size=(6, 5), matrix=mean, names=names)
        print("mean score matrix (rows A from the train set, columns B from the test set):")
        print("        " + " ".join(f"{n:>6}" for n in names))
        for i, name in enumerate(names):
            print(f"{name:>7} " + " ".join(f"{v:6.1f}" for v in mean[i]))
    return 0


def cmd_evaluate_features(args) -> int:
    """FID per protein with a LIN classifier, or 1-NN protein accuracy of pixels / classifier / critic features."""
    import csv

    import numpy as np

    from .devices import resolve_device
    from .evaluation import fid, profiling

    device = resolve_device(args.device)
    train, test = _load_cells(args.train, None), _load_cells(args.data, None)
    if args.what == "fid":
        generator, meta = _model(args.model, args.device)
        names = list(meta["class_names"]) if generator.n_classes > 1 else list(test.class_names)
        train, test = train.select_classes(names), test.select_classes(names)
    critic = None
    if args.what == "features" and args.critic:
        critic, _ = profiling.load_critic(args.critic, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar, update = _bar(args.classifier_iterations, "classifier")
    classifier = fid.train_classifier(train, test, iterations=args.classifier_iterations, width=args.classifier_width,
                                      device=device, progress=update)
    bar.close()
    print(f"LIN classifier: {classifier.accuracy:.1%} protein accuracy on the held-out cells")
    settings = {"classifier_iterations": args.classifier_iterations, "classifier_width": args.classifier_width,
                "classifier_accuracy": classifier.accuracy, "train": train.description, "test": test.description,
                "device": str(device)}
    if args.what == "fid":
        real = np.diagonal(fid.class_fid_matrix(classifier, train, test))
        fake = fid.generator_fid(classifier, generator, test, n=args.generated)
        rows = [[name, real[i], fake[name]] for i, name in enumerate(test.class_names)]
        with open(out / "fid.csv", "w", newline="") as f:
            csv.writer(f).writerows([["protein", "real (train vs test)", meta["name"]], *rows])
        _write_json(out / "fid.json", {"settings": {**settings, "model": meta["name"], "generated": args.generated},
                                       "fid": {r[0]: {"real": r[1], "generated": r[2]} for r in rows}})
        for name, r, g in rows:
            print(f"{name:>10}: FID real {r:.3f}, generated {g:.3f}")
        return 0
    embeddings = {"raw pixels": test.images.reshape(len(test), -1).astype(np.float64),
                  "LIN classifier": fid.classifier_features(classifier, test.images)}
    if critic is not None:
        embeddings["critic"] = profiling.critic_features(critic, test.images)
    accuracy = {name: profiling.loo_1nn_accuracy(x, test.class_index) for name, x in embeddings.items()}
    with open(out / "features.csv", "w", newline="") as f:
        csv.writer(f).writerows([["embedding", "1-NN protein accuracy", "dimensions"],
                                 *[[k, v, embeddings[k].shape[1]] for k, v in accuracy.items()]])
    _write_json(out / "features.json", {"settings": {**settings, "critic": args.critic}, "accuracy": accuracy})
    for name, value in accuracy.items():
        print(f"{name:>15}: leave-one-out 1-NN protein accuracy {value:.1%}")
    return 0


def cmd_interpolate(args) -> int:

    from .evaluation import interpolation
    from .sampling import latent_codes, sample, write_samples

    generator, meta = _model(args.model, args.device)
    pool = latent_codes(max(args.anchors) + 1, generator.nz, generator.nz_red, args.seed)
    codes = interpolation.interpolate_codes(pool[args.anchors], args.frames, args.method, args.red_only, generator.nz_red)
    samples = sample(generator, meta, n=len(codes), seed=args.seed, z=codes)
    samples.provenance.update(anchors=args.anchors, method=args.method, red_only=args.red_only)
    write_samples(samples, args.out)
    lengths = interpolation.red_lengths(samples.images[:, 0])
    rho = interpolation.monotonicity(lengths)
    print(f"{len(codes)} frames -> {args.out}; red length {lengths[0]:.0f} -> {lengths[-1]:.0f} px, Spearman ρ {rho:.2f}")
    if args.measure:
        result = interpolation.growth_monotonicity(generator, n_pairs=args.measure, frames=args.frames,
                                                   seed=args.seed, method=args.method, red_only=args.red_only)
        out = Path(args.out).with_suffix(".growth.json")
        _write_json(out, result)
        print(f"short -> long interpolations: median Spearman ρ {result['median_rho']:.2f} over {args.measure} pairs -> {out}")
    return 0


def cmd_train_em(args) -> int:
    from .data import em
    from .training.em_trainer import EMTrainConfig, EMTrainer

    available = em.section_indices(args.data)  # a clear error for a folder that is not a VNC stack
    sections = args.sections or available
    images, labels = em.read_sections(args.data, sections)
    if labels is None:
        raise ValueError(f"{args.data}: training needs membrane and mitochondria labels beside raw/")
    config = EMTrainConfig(
        mode=args.model, iterations=args.iterations, batch_size=args.batch_size, crop=args.crop,
        label_width=args.label_width, image_width=args.image_width, label_d_width=args.label_width,
        image_d_width=args.image_width, reconstructor_width=args.label_width, seed=args.seed, device=args.device,
        checkpoint_every=args.checkpoint_every, init_label_gan=args.init_label_gan, half_model=args.half,
    )
    description = f"VNC {Path(args.data).name} sections {sections[0]:02d}-{sections[-1]:02d}"

    def train() -> int:
        trainer = EMTrainer(config, images, labels, args.out, resume=args.resume, description=description)
        return _drive(trainer, config.iterations, None, trainer.rank != 0, args.time_limit)

    return _run_distributed(args.device, train)


def cmd_render_em(args) -> int:
    from . import checkpoints
    from .data import em
    from .rendering import render_tiled
    from .training.em_trainer import load_em_model

    model = load_em_model(checkpoints.resolve_model(args.model), device=args.device)
    if model.image_generator is None:
        raise ValueError(f"{args.model} is a {model.meta['mode']} model: it has no image generator to render labels")
    if args.labels:
        labels = em.read_label_map(args.labels)
    else:
        labels = model.sample_labels(args.size, args.size, seed=args.seed)
        em.write_label_map(labels, Path(args.out).with_suffix(".labels.png"))
    image = render_tiled(model.image_generator, labels, noise_seed=args.seed, device=model.device)
    import imageio.v3 as iio
    import tifffile

    out = Path(args.out)
    if out.suffix.lower() in (".tif", ".tiff"):
        tifffile.imwrite(out, image)
    else:
        iio.imwrite(out, image)
    print(f"rendered {labels.shape[0]}x{labels.shape[1]} EM image -> {out}")
    return 0


def cmd_view(args) -> int:
    """Open napari with the plugin's offline sample data and its widgets at work (the README's first command)."""
    import napari

    from ._widgets.demo import open_demo

    viewer = napari.Viewer(title="napari-biogans")
    opened = open_demo(viewer, args.model or None, args.em_model or None, args.samples)
    for note in opened["notes"]:
        print(f"biogans view: {note}", file=sys.stderr)
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
    fields = p.add_argument_group("fields of view", "--fields N writes whole fields (OME-TIFF, 100 nm pixels) with "
                                  "ground-truth labels and per-cell truth instead of single cells")
    fields.add_argument("--fields", type=int, default=0, metavar="N", help="number of fields of view")
    fields.add_argument("--field-size", type=_size, default=(512, 512), help="HxW of a field (default 512x512)")
    fields.add_argument("--cells-per-field", type=int, default=12)
    fields.add_argument("--z-planes", type=int, default=0, help="a z-stack of this many planes, 0.3 µm apart")
    fields.add_argument("--bit-depth", type=int, default=16, choices=[8, 12, 16])
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("prepare-cells", help="fields of view (TIFF / OME-TIFF, z-stacks) -> aligned LIN-style cells "
                                             "with a provenance row per cell")
    p.add_argument("--image", help="a multichannel field of view (.tif), or a folder of them")
    p.add_argument("--red-channel", type=int, default=0, help="channel index of the outline marker (Bgs4)")
    p.add_argument("--green-channel", type=int, default=1, help="channel index of the protein")
    p.add_argument("--red", help="the red channel as its own .tif (with --green)")
    p.add_argument("--green", help="the green channel as its own .tif (with --red)")
    p.add_argument("--labels", help="a label image (.tif, 0 = background) from cellpose, YeaZ...; or a folder "
                                    "holding <field>.tif / <field>_labels.tif / <field>_masks.tif")
    p.add_argument("--pixel-size", type=float, default=None, help="µm per pixel (default: from the metadata)")
    p.add_argument("--project", default="max", choices=["max", "sum"], help="z-stack projection")
    p.add_argument("--protein", required=True, help="the green protein's name (the class folder)")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--size", type=_size, default=(48, 80), help="48x80 (0.2 µm pixels) or 96x160 (0.1 µm)")
    p.add_argument("--split", type=float, default=0.2, help="test fraction of the seeded train/test split (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.add_argument("--normalise", default="field", choices=["field", "cell"],
                   help="field: one intensity range per field (brightness differences survive); cell: per cell")
    p.add_argument("--no-mask", action="store_true", help="keep the pixels outside the cell (LIN zeroes them)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare_cells)

    p = sub.add_parser("info", help="what a LIN folder, .h5, .tif or checkpoint holds")
    p.add_argument("path")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a fluorescence GAN on a LIN folder, .h5 or .tif stack")
    p.add_argument("--data", required=True, help="LIN split folder, .h5 or .tif cell stack")
    p.add_argument("--model", default="star", choices=TRAIN_MODELS,
                   help="one-class-sep / multichannel-sep: the green-on-red separable variants")
    p.add_argument("--objective", default="wgan-gp", choices=["gan", "wgan", "wgan-gp", "lsgan", "hinge"],
                   help="wgan-gp for every model; hinge is Miyato & Koyama's loss, but it stalled the projection model "
                        "on the simulated cells (docs/evaluation.md)")
    p.add_argument("--iterations", type=int, default=1000, help="generator iterations")
    p.add_argument("--batch-size", type=int, default=64, help="cells per class per step")
    p.add_argument("--width", type=int, default=64, help="base width (ngf = ndf); 64 is the paper's")
    p.add_argument("--nz", type=int, default=100, help="latent size")
    p.add_argument("--proteins", default=None, help="comma-separated proteins to train on (default: all)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop and save after this many minutes of training (resume continues)")
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
    p.add_argument("--longer", type=float, default=0.0,
                   help="latent arithmetic: add this many 'long minus short' vectors to the codes (negative: shorter)")
    p.add_argument("--proteins", default=None, help="comma-separated proteins (default: all the model has)")
    p.add_argument("--out", required=True, help="output .tif or .h5")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("evaluate", help="C2ST, reconstruction, the real-vs-real table or the EM report; JSON, CSV "
                                        "and PNG")
    p.add_argument("what", choices=["c2st", "reconstruct", "real-vs-real", "em", "fid", "features"])
    p.add_argument("--model", help="catalogue name or .safetensors (c2st, reconstruct, em)")
    p.add_argument("--data", required=True, help="held-out real cells: the LIN test split (folder, .h5, .tif); "
                                                 "em: the VNC stack folder with labels (stack1)")
    p.add_argument("--train", help="training cells: the nearest-neighbour baseline; set A of real-vs-real")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto")
    p.add_argument("--splits", type=int, default=10)
    p.add_argument("--steps", type=int, default=None, help="critic steps (5000) or L-BFGS steps (50)")
    p.add_argument("--algorithm", default="wgan-gp", choices=["wgan-gp", "wgan", "gan"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--test-batches", type=int, default=10, help="held-out batch pairs averaged per critic")
    p.add_argument("--width", type=int, default=64, help="C2ST critic width (64 as the paper)")
    p.add_argument("--lr", type=float, default=None, help="C2ST critic learning rate (default: the reference's)")
    p.add_argument("--proteins", default=None, help="real-vs-real: comma-separated proteins")
    p.add_argument("--mode", default="regular", choices=["regular", "separable"])
    p.add_argument("--restarts", type=int, default=5)
    p.add_argument("--max-cells", type=int, default=None, help="reconstruct a random subset of this many cells")
    lin_options = p.add_argument_group("fid, features", "FID with a LIN classifier trained on --train; 1-NN protein "
                                                        "accuracy of embeddings of the --data cells")
    lin_options.add_argument("--classifier-iterations", type=int, default=2000)
    lin_options.add_argument("--classifier-width", type=int, default=32)
    lin_options.add_argument("--generated", type=int, default=None, help="fid: generated cells per protein (500); "
                                                                         "em: generated label/image pairs (10)")
    lin_options.add_argument("--critic", default=None, help="features: a run's train_state.safetensors whose critic "
                                                            "embeds the cells")
    em_options = p.add_argument_group("em", "the EM report; --width, --batch-size, --algorithm and --lr set its C2ST")
    em_options.add_argument("--extra-real", default=None, help="more real sections for the C2ST (a VNC stack folder "
                                                               "such as stack2; raw/ is enough)")
    em_options.add_argument("--sections-train", type=_sections, default=tuple(range(10)),
                            help="real training sections: the segmenter's data, the real-vs-real yardstick (0-9)")
    em_options.add_argument("--sections-val", type=_sections, default=tuple(range(10, 20)),
                            help="real validation sections (10-19)")
    em_options.add_argument("--size", type=int, default=None, help="side of the generated pairs (default: the "
                                                                   "validation sections')")
    em_options.add_argument("--segmenter-iterations", type=int, default=2000)
    em_options.add_argument("--segmenter-width", type=int, default=32, help="the U-Net's base width (F.5: 32)")
    em_options.add_argument("--c2st-steps", type=int, default=2000, help="critic steps of each C2ST")
    em_options.add_argument("--birthday-batch-sizes", type=int, nargs="+", default=[100, 200, 500, 1000])
    em_options.add_argument("--birthday-repeats", type=int, default=10)
    em_options.add_argument("--skip", nargs="+", default=[], choices=["segmentation", "statistics", "birthday", "c2st"],
                            help="parts to leave out")
    em_options.add_argument("--seed", type=int, default=0, help="generated pair i uses seed + i")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("interpolate", help="a cell-cycle interpolation between sampled codes, to .tif or .h5")
    p.add_argument("--model", required=True)
    p.add_argument("--anchors", type=int, nargs="+", default=[0, 1], help="indices of codes drawn with --seed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--method", default="slerp", choices=["slerp", "linear"])
    p.add_argument("--red-only", action="store_true", help="move only the red code; greens stay fixed")
    p.add_argument("--measure", type=int, default=0, metavar="PAIRS",
                   help="also measure growth monotonicity over this many short -> long pairs")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("train-em", help="train a supervised EM GAN on VNC sections (raw + labels)")
    p.add_argument("--data", required=True, help="VNC stack folder with raw/, membranes/, mitochondria/")
    p.add_argument("--model", default="dsgan", choices=["sgan", "dsgan", "joint", "conditional"],
                   help="conditional: mitochondria given membranes")
    p.add_argument("--sections", type=int, nargs="*", default=list(range(10)), help="training sections (00-09)")
    p.add_argument("--iterations", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--crop", type=int, default=512, help="crop side, a multiple of 64")
    p.add_argument("--label-width", type=int, default=32, help="G_y, label critics and F_y width")
    p.add_argument("--image-width", type=int, default=64, help="G_x and image critic width")
    p.add_argument("--init-label-gan", default=None, help="dsgan: start G_y from this sgan run or model")
    p.add_argument("--half", action="store_true", help="store the model file in float16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop and save after this many minutes of training (resume continues)")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.set_defaults(func=cmd_train_em)

    p = sub.add_parser("render-em", help="render an EM image from a label map (codes 0/1/2) of any size")
    p.add_argument("--model", required=True, help="catalogue name or em_model.safetensors")
    p.add_argument("--labels", default=None, help="label map PNG/TIFF; without it, one is generated")
    p.add_argument("--size", type=int, default=512, help="side of a generated label map")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output .png or .tif")
    p.set_defaults(func=cmd_render_em)

    p = sub.add_parser("view", help="open napari with the sample data, Generate cells and Paint EM at work")
    p.add_argument("--samples", nargs="*", default=["simulated_lin", "vnc_em"], help="sample keys to open")
    p.add_argument("--model", default="star-6", help="fluorescence model for Generate cells ('' for none)")
    p.add_argument("--em-model", default="vnc-dsgan", help="EM model for Paint EM ('' for none)")
    p.set_defaults(func=cmd_view)
    return parser


def main(argv=None) -> int:
    from .data.em import EMFormatError
    from .data.lin import LinFormatError

    args = build_parser().parse_args(argv)
    if getattr(args, "steps", 0) is None:
        args.steps = 50 if args.what == "reconstruct" else 5000
    if getattr(args, "generated", 0) is None:
        args.generated = 10 if args.what == "em" else 500
    if getattr(args, "what", None) in ("c2st", "reconstruct", "em") and not args.model:
        print(f"biogans evaluate {args.what}: error: --model is required", file=sys.stderr)
        return 2
    if getattr(args, "what", None) in ("fid", "features", "real-vs-real") and not args.train:
        print(f"biogans evaluate {args.what}: error: --train is required", file=sys.stderr)
        return 2
    if getattr(args, "what", None) == "fid" and not args.model:
        print("biogans evaluate fid: error: --model is required", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (LinFormatError, EMFormatError, FileExistsError, ValueError, RuntimeError) as err:
        print(f"biogans {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
