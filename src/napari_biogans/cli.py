"""The ``biogans`` command line: the same core functions the napari widgets call."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__
from .training import TRAIN_MODELS

SIMULATED_RELEASE = "LIN_Simulated_WT_size-{h}-{w}_{role}"
MODEL_HELP = "catalogue name, .safetensors model file or training run folder"
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
    """A human summary of a model (catalogue name, checkpoint file or run folder) or of what a LIN
    folder, release root, HDF5 or TIFF stack holds."""
    from . import checkpoints
    from .data import lin

    if checkpoints.names_a_model(path):
        return describe_checkpoint(checkpoints.resolve_model(path))
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
    if meta["kind"] != "train-state":  # what every output made from this model records
        lines.append(f"model name: {meta.get('name', checkpoints.model_name(path))}, "
                     f"sha256 {checkpoints.checked_sha256(path)}")
    config = meta.get("config") or meta.get("generator_config")
    if config is None and meta.get("mode"):  # an EM model
        config = {"mode": meta["mode"], "label_generator": meta.get("label_generator"),
                  "image_generator": meta.get("image_generator")}
    lines.append(f"architecture: {config}")
    if "iteration" in meta or "iterations" in meta:
        lines.append(f"iterations: {meta.get('iterations', meta.get('iteration'))}")
    if "class_names" in meta:
        lines.append("proteins: " + ", ".join(meta["class_names"]))
    data = meta.get("data")
    if data:
        flag = "  [trained on SIMULATED cells]" if data.get("simulated") else ""
        cells = f" ({data['cells']} cells)" if data.get("cells") is not None else ""
        lines.append(f"training data: {data.get('description')}{cells}{flag}")
    return "\n".join(lines)


def cmd_info(args) -> int:
    print(describe(Path(args.path)))
    return 0


def _load_cells(path, proteins):
    from .data import lin

    stack = lin.read_cells(path)
    return stack.select_classes(proteins) if proteins else stack


def _drive(trainer, shown_losses, quiet: bool = False, time_limit_min: float | None = None) -> int:
    """Run a trainer's job behind a terminal progress bar; Ctrl-C, SIGTERM and SIGHUP save and exit
    with 128 + the signal's number (130 for Ctrl-C), a repeated one only says it is saving.

    ``shown_losses`` names the losses on the bar (None: the first three). ``time_limit_min``:
    stop, save and exit normally after this many minutes (rank 0's clock decides, at every logged
    iteration, so every torchrun rank stops at the same one).
    """
    import signal

    from tqdm import tqdm

    from .jobs import StopFlag, run, stop_on_signals
    from .training.distributed import rank0_decides

    deadline = time.monotonic() + 60 * time_limit_min if time_limit_min else None
    bar = tqdm(total=trainer.config.iterations, initial=trainer.iteration, disable=quiet, unit="it")
    stop = StopFlag()

    def on_update(update) -> None:
        event = update.payload
        if deadline is not None and not event.finished and rank0_decides(time.monotonic() > deadline,
                                                                          trainer.device):
            stop.set()
        bar.update(update.done - bar.n)
        if event.losses:
            keys = shown_losses or list(event.losses)[:3]
            bar.set_postfix({k: f"{event.losses[k]:.3g}" for k in keys if k in event.losses})
        if event.finished and not quiet:
            bar.close()
            print(event.message)

    try:
        with stop_on_signals(stop) as received:
            run(trainer.run(stop), on_update)
    finally:
        bar.close()
        trainer.close()
    if received:
        if not quiet:
            print(f"{signal.Signals(received[0]).name}: stopped at iteration {trainer.iteration}; saved the training "
                  f"state in {trainer.run_dir}; resume with --resume")
        return 128 + received[0]
    return 0


def _print_cost(trainer) -> None:
    """The honest default: what this run will cost here, and the cheaper setting when it is impractical."""
    from .training.session import cost

    if trainer.rank == 0:
        print(f"estimate: {cost(trainer)}", flush=True)


def cmd_train(args) -> int:
    from .training.distributed import run_in_process_group
    from .training.trainer import TrainConfig, Trainer

    def train() -> int:
        stack = _load_cells(args.data, args.proteins.split(",") if args.proteins else None)
        config = TrainConfig(
            arch=args.model, objective=args.objective, iterations=args.iterations, batch_size=args.batch_size,
            width=args.width, nz=args.nz, seed=args.seed, device=args.device,
            checkpoint_every=args.checkpoint_every, log_every=args.log_every, preview_every=args.iterations + 1,
            amp=not args.no_amp, keep_models_every=args.keep_models_every, lr=args.lr,
        )
        trainer = Trainer(config, stack, args.out, resume=args.resume)
        quiet = trainer.rank != 0
        if stack.simulated and not quiet:
            print("training on SIMULATED cells: the model will be marked as a model of simulated data")
        _print_cost(trainer)
        return _drive(trainer, ("critic", "generator"), quiet, args.time_limit)

    return run_in_process_group(args.device, train)


def cmd_sample(args) -> int:
    from .sampling import sample, write_samples

    generator, meta = _model(args.model, "cpu")
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
    simulated = "  [model trained on SIMULATED cells]" if samples.provenance["simulated_training_data"] else ""
    print(f"{args.n} cells ({', '.join(samples.channel_names)}) from {meta['name']} -> {args.out}{simulated}")
    return 0


def _model(name, device):
    """``(generator, meta)`` of a fluorescence model named by catalogue name, file or run folder, through
    the one loader (:mod:`napari_biogans.models.loader`): ``meta`` holds its name, sha256 and path."""
    from .models import loader

    loaded = loader.load(name, device, kind=loader.GENERATOR_KIND)
    return loaded.model, loaded.meta


def _run_job(job, quiet: bool = False):
    """Drive a core job (``napari_biogans.jobs``) behind a terminal progress bar; return its result."""
    from . import jobs

    on_update, close = jobs.terminal_progress(quiet)
    try:
        return jobs.run(job, on_update)
    finally:
        close()


def _write_json(path: Path, data) -> None:
    import json

    from .atomic import write_text

    write_text(path, json.dumps(data, indent=2))


def _c2st_budget_note(settings, critics: int, image_size, device) -> str | None:
    """The estimated time of a C2ST that is long on a CPU, and the cheaper options to use."""
    from .evaluation.pipeline import c2st_budget, duration

    budget = c2st_budget(settings, critics, image_size, device)
    if budget is None:
        return None
    seconds, cheap, cheap_seconds = budget
    return (f"note: {critics} critics x {settings.steps} steps at width {settings.width} take about "
            f"{duration(seconds)} on this CPU. For a quicker, noisier score use --splits {cheap.splits} "
            f"--steps {cheap.steps} --width {cheap.width} --batch-size {cheap.batch_size} --lr {cheap.lr:g} (about "
            f"{duration(cheap_seconds)}; the cheapest setting calibrated on a CPU), or a GPU (--device cuda).")


def cmd_evaluate_em(args) -> int:
    from .evaluation.em_report import EMEvalSettings, evaluate_em, report_rows, write_report
    from .models import loader

    loaded = loader.load(args.model, args.device, kind=loader.EM_KIND)
    model = loaded.model
    settings = EMEvalSettings(
        train_sections=args.sections_train, validation_sections=args.sections_val, n_generated=args.generated,
        size=args.size, segmenter=None if args.train_segmenter else args.segmenter,
        segmenter_iterations=args.segmenter_iterations, segmenter_width=args.segmenter_width,
        c2st_steps=args.c2st_steps, c2st_width=args.width, c2st_batch_size=args.batch_size,
        c2st_algorithm=args.algorithm, c2st_lr=args.lr, birthday_batch_sizes=tuple(args.birthday_batch_sizes),
        birthday_repeats=args.birthday_repeats, skip=tuple(args.skip), calibrate=not args.no_calibration,
        seed=args.seed,
    )
    # the job reads every input before its first update, so a bad input shows its error alone
    evaluation = _run_job(evaluate_em(model, args.data, settings))
    evaluation.results["model"].update(file=loaded.meta["path"], sha256=loaded.meta["sha256"])
    files = write_report(evaluation, args.out)
    segmentation = evaluation.results.get("segmentation")
    if segmentation:
        used = segmentation["segmenter"]
        print(f"segmenter: {used.get('name') or 'trained for this run'} ({used['source']})")
    for row in report_rows(evaluation.results):
        paper = "" if row["paper_generated"] is None else f"   (paper {row['paper_generated']:.3g})"
        cells = ["—" if v is None else f"{v:.4g}" for v in (row["real"], row["generated"])]
        mark = "   UNTRUSTED" if row["trusted"] is False else ""
        if "described, not tested" in row["note"]:  # a mean (the paper's), no χ² and no verdict of its own
            mark = "   described, not tested"
        print(f"{row['measure']:>32}: real {cells[0]:>9}, generated {cells[1]:>9}{paper}{mark}")
    for row in report_rows(evaluation.results):
        if row["trusted"] is False and not row["measure"].startswith("segmentation.iu"):
            print(f"{row['measure']}: {row['note'].split(';')[0]}")
    for part, reason in evaluation.results["skipped"].items():
        print(f"{part}: {reason}")
    print(f"report -> {', '.join(str(f) for f in files.values())}")
    return 0


def _c2st_settings(args):
    from .evaluation.pipeline import C2STSettings

    return C2STSettings(steps=args.steps, splits=args.splits, width=args.width, batch_size=args.batch_size,
                        test_batches=args.test_batches, algorithm=args.algorithm, lr=args.lr,
                        memory_gb=args.memory_gb)


def _real_vs_real_settings(args, device):
    """The paper's settings on a GPU; on a CPU, ``pipeline.cpu_real_vs_real``'s for every option not given."""
    from dataclasses import replace

    from .evaluation.pipeline import C2STSettings, cpu_real_vs_real

    base = cpu_real_vs_real(C2STSettings()) if device.type == "cpu" else C2STSettings()
    if args.steps is not None:  # the CPU learning rate belongs to its short training, not to any --steps
        base = replace(base, lr=None)
    given = {"steps": args.steps, "splits": args.splits, "width": args.width, "batch_size": args.batch_size,
             "lr": args.lr}
    settings = replace(base, algorithm=args.algorithm, memory_gb=args.memory_gb, test_batches=args.test_batches,
                       **{k: v for k, v in given.items() if v is not None})
    if device.type == "cpu":
        print(f"real vs real on a CPU: {settings.splits} split(s), {settings.steps} steps, width "
              f"{settings.width}, batch {settings.batch_size}, learning rate {settings.lr or 'the reference'} (the "
              f"paper's: 10 splits, 5000 steps, width 64, batch 64, on a GPU)")
    return settings


def _fast_settings(args):
    from .evaluation.fast_test import FastTestSettings

    return FastTestSettings(feature_iterations=args.fast_iterations, permutations=args.permutations)


def cmd_calibrate(args, cells, device) -> int:
    from .evaluation import calibrate

    settings = calibrate.CalibrationSettings(
        fast=_fast_settings(args), critic_steps=args.steps, critic_splits=args.splits, critic_width=args.width,
        critic_batch_size=args.batch_size, critic_algorithm=args.algorithm, critic_lr=args.lr,
        critic_test_batches=args.test_batches, required_only=args.required_controls,
        skip=("critic",) if args.no_critic else ("fast",) if args.critic_only else ())
    proteins = args.proteins.split(",") if args.proteins else None
    result = _run_job(calibrate.calibrate_job(cells, proteins, settings, device))
    files = calibrate.write(result, args.out)
    print(calibrate.markdown(result))
    print(f"-> {', '.join(str(f) for f in files.values())}")
    return 0


def cmd_evaluate(args) -> int:
    """C2ST, reconstruction, real vs real, FID or features through the evaluation pipeline (the
    Diagnostics widget's), written by its one writer."""
    from .devices import resolve_device
    from .evaluation import outputs, pipeline

    if args.what == "em":  # reads every input before it writes anything
        return cmd_evaluate_em(args)
    device = resolve_device(args.device)
    cells = _load_cells(args.data, None)
    train = _load_cells(args.train, None) if args.train and args.what != "c2st" else None
    if args.what in ("c2st", "reconstruct", "fid"):
        generator, meta = _model(args.model, args.device)
    if args.what == "calibrate":
        return cmd_calibrate(args, cells, device)
    if args.what == "c2st" and pipeline.c2st_method(args.method, device) == "fast":
        print("method: fast feature test (--method critic for the paper's critic C2ST)")
        job = pipeline.fast_c2st_job(generator, meta, cells, _fast_settings(args), device)
    elif args.what == "c2st":
        print("method: the paper's critic C2ST" + ("" if args.method == "critic" else " (the default on a GPU)"))
        settings = _c2st_settings(args)
        pipeline.match_model(cells, generator, meta)  # a mismatch is reported before the estimate
        print("critics:", pipeline.c2st_plan(settings, generator.n_classes, cells, device).describe())
        if args.plan_only:
            return 0
        note = _c2st_budget_note(settings, settings.splits * generator.n_classes, cells.image_size, device)
        if note:
            print(note)
        job = pipeline.c2st_job(generator, meta, cells, settings, device)
    elif args.what == "reconstruct":
        settings = pipeline.ReconstructionSettings(steps=args.steps, restarts=args.restarts, mode=args.mode,
                                                   max_cells=args.max_cells)
        job = pipeline.reconstruction_job(generator, meta, cells, settings, device, train=train)
    elif args.what == "real-vs-real":
        settings = _real_vs_real_settings(args, device)
        proteins = args.proteins.split(",") if args.proteins else None
        plan = pipeline.real_vs_real_plan(cells, settings, device, train=train, proteins=proteins)
        print("critics:", plan.describe())
        if args.plan_only:
            return 0
        note = _c2st_budget_note(settings, plan.critics, cells.image_size, device)
        if note:
            print(note)
        job = pipeline.real_vs_real_job(cells, settings, device, train=train, proteins=proteins, plan=plan)
    else:
        settings = pipeline.ClassifierSettings(iterations=args.classifier_iterations, width=args.classifier_width,
                                               generated=args.generated)
        if args.what == "fid":
            job = pipeline.fid_job(generator, meta, cells, train, settings, device)
        else:
            critic = None
            if args.critic:
                from .evaluation import profiling

                critic, _ = profiling.load_critic(args.critic, device)
            job = pipeline.features_job(cells, train, settings, device, critic=critic, critic_file=args.critic)
    result = _run_job(job)
    files = outputs.write_outputs(result, args.out)
    print(outputs.describe(result))
    print(f"-> {', '.join(str(f) for f in files.values())}")
    return 0


def cmd_interpolate(args) -> int:
    from .evaluation import interpolation
    from .sampling import latent_codes, sample, write_samples

    generator, meta = _model(args.model, args.device)
    if args.cycle:
        anchors = interpolation.cycle_anchors(generator, args.seed)
    else:
        anchors = latent_codes(max(args.anchors) + 1, generator.nz, generator.nz_red, args.seed)[args.anchors]
    codes = interpolation.interpolate_codes(anchors, args.frames, args.method, args.red_only, generator.nz_red)
    samples = sample(generator, meta, n=len(codes), seed=args.seed, z=codes)
    samples.provenance.update(anchors="cell cycle: short, grown, long" if args.cycle else args.anchors,
                              method=args.method, red_only=args.red_only)
    write_samples(samples, args.out, stack_axis="frame")
    lengths = interpolation.red_lengths(samples.images[:, 0])
    rho = interpolation.monotonicity(lengths)
    print(f"{len(codes)} frames -> {args.out}; red length {lengths[0]:.0f} -> {lengths[-1]:.0f} px, Spearman ρ {rho:.2f}")
    if args.measure:
        result = interpolation.growth_monotonicity(generator, n_pairs=args.measure, frames=args.frames,
                                                   seed=args.seed, method=args.method, red_only=args.red_only)
        out = Path(args.out).with_suffix(".growth.json")
        _write_json(out, result)
        print(f"short -> long interpolations over {args.measure} pairs: median Spearman ρ {result['median_rho']:.2f} "
              f"straight, {result['median_rho_through_grown']:.2f} through a grown cell -> {out}")
    return 0


def cmd_train_em(args) -> int:
    from .data import em
    from .training.distributed import run_in_process_group
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
        checkpoint_every=args.checkpoint_every, keep_models_every=args.keep_models_every,
        init_label_gan=args.init_label_gan, half_model=args.half,
        init_image_generator=args.init_image_generator, fake_cycle_trains_gy=args.fake_cycle_trains_gy,
        diversity_weight=args.diversity_weight, freeze_image_generator=args.freeze_image_generator,
    )
    description = f"VNC {Path(args.data).name} sections {sections[0]:02d}-{sections[-1]:02d}"

    def train() -> int:
        trainer = EMTrainer(config, images, labels, args.out, resume=args.resume, description=description)
        _print_cost(trainer)
        noise_side = trainer.label_side // trainer.models["Gy"].factor
        if args.model in ("sgan", "dsgan") and noise_side < 4 and trainer.rank == 0:
            print(f"biogans train-em: G_y sees {noise_side}x{noise_side} noise per crop; below 4x4 (512 crops) its "
                  "samples were measured to tile one motif (docs/evaluation.md, 'G_y collapse')", file=sys.stderr)
        return _drive(trainer, None, trainer.rank != 0, args.time_limit)

    return run_in_process_group(args.device, train)


def cmd_render_em(args) -> int:
    from . import ome
    from .data import em
    from .models import loader
    from .rendering import render_tiled

    loaded = loader.load(args.model, args.device, kind=loader.EM_KIND)
    model = loaded.model
    if model.image_generator is None:
        raise ValueError(f"{args.model} is a {model.meta['mode']} model: it has no image generator to render labels")
    out = Path(args.out)
    to_ome = out.suffix.lower() in (".tif", ".tiff") or ome.is_zarr_path(out)
    if args.labels:
        labels = em.read_label_map(args.labels)
    else:
        labels = model.sample_labels(args.size, args.size, seed=args.seed)
        if not ome.is_zarr_path(out):  # an OME-Zarr holds its label map inside
            em.write_label_map(labels, out.with_suffix(".labels.png"))
    image = render_tiled(model.image_generator, labels, noise_seed=args.seed, device=model.device)
    if to_ome:
        pixel_size = em.pixel_size_um(model.meta)
        provenance = {"model": loaded.meta["name"], "weights_sha256": loaded.meta["sha256"], "seed": args.seed,
                      "labels": str(args.labels) if args.labels else f"generated, seed {args.seed}"}
        ome.write(out, image, "YX", ["EM"], pixel_size, {"provenance": provenance, "label_codes": em.LABEL_NAMES},
                  labels=labels if ome.is_zarr_path(out) else None)
    else:
        import imageio.v3 as iio

        from .atomic import atomic_write

        atomic_write(out, lambda tmp: iio.imwrite(tmp, image, extension=out.suffix))
    print(f"rendered {labels.shape[0]}x{labels.shape[1]} EM image -> {out}")
    return 0


def cmd_export(args) -> int:
    from . import export

    out = args.out or f"{Path(str(args.model)).stem}{export.default_suffix(args.format)}"
    result = _run_job(export.export_job(args.model, args.format, out, seed=args.seed), quiet=args.quiet)
    print(export.describe(result))
    return 0


def cmd_view(args) -> int:
    """Open napari maximised on Generate cells and Paint EM at work (the README's first command)."""
    import napari

    from ._widgets.demo import open_demo

    viewer = napari.Viewer(title="napari-biogans")
    demo = open_demo(viewer, args.model or None, args.em_model or None)
    for note in demo.notes:
        print(f"biogans view: {note}", file=sys.stderr)
    window = demo.generate.window()  # the docked widget's main window: Qt's public way to reach it
    window.setGeometry(window.screen().availableGeometry())  # maximised also where no window manager does it
    window.showMaximized()
    if args.screenshot:
        def save_and_quit():
            demo.fit()  # the window has its final size now
            viewer.screenshot(args.screenshot, canvas_only=False, flash=False)
            print(f"saved {args.screenshot}")
            viewer.close()

        demo.when_idle(save_and_quit)
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

    p = sub.add_parser("info", help="what a LIN folder, .h5, .tif, checkpoint, run folder or catalogue model holds")
    p.add_argument("path", help="a LIN folder or release root, .h5, .tif, .safetensors, run folder or catalogue name")
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
    p.add_argument("--lr", type=float, default=None, help="learning rate of both networks (default: the objective's "
                                                          "reference, 1e-4 for wgan-gp)")
    p.add_argument("--proteins", default=None, help="comma-separated proteins to train on (default: all)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--keep-models-every", type=int, default=0, metavar="N",
                   help="also keep the model file of every N-th iteration in RUN/models/ (a multiple of "
                        "--checkpoint-every), to pick the best iteration afterwards")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop and save after this many minutes of training (resume continues)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast / TF32 on CUDA")
    p.add_argument("--out", required=True, help="run folder (checkpoints, generator, losses.csv)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample cells from a model to OME-TIFF, OME-Zarr or .h5")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--red-seed", type=int, default=None, help="seed of the red noise alone (same red, new greens)")
    p.add_argument("--longer", type=float, default=0.0,
                   help="latent arithmetic: add this many 'long minus short' vectors to the codes (negative: shorter)")
    p.add_argument("--proteins", default=None, help="comma-separated proteins (default: all the model has)")
    p.add_argument("--out", required=True, help="output .tif (OME-TIFF), .ome.zarr or .h5")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("evaluate", help="C2ST, reconstruction, the real-vs-real table, FID, the EM report or the "
                                        "calibration of the diagnostics; JSON, CSV and PNG")
    p.add_argument("what", choices=["c2st", "reconstruct", "real-vs-real", "em", "fid", "features", "calibrate"])
    p.add_argument("--model", help="catalogue name or .safetensors (c2st, reconstruct, em)")
    p.add_argument("--data", required=True, help="held-out real cells: the LIN test split (folder, .h5, .tif); "
                                                 "em: the VNC stack folder with labels (stack1)")
    p.add_argument("--train", help="training cells: the classifier's (fid, features); the nearest-neighbour baseline "
                                   "(without it: the nearest other held-out cell); set A of real-vs-real (without "
                                   "it: two halves of --data)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto")
    p.add_argument("--splits", type=int, default=None, help="C2ST splits (10 as the paper; calibrate: 3; real-vs-real "
                                                            "on a CPU: 1)")
    p.add_argument("--steps", type=int, default=None, help="critic steps (5000) or L-BFGS steps (50); on a CPU a "
                                                           "long C2ST prints its estimated time and a cheaper setting")
    p.add_argument("--algorithm", default="wgan-gp", choices=["wgan-gp", "wgan", "gan"])
    p.add_argument("--batch-size", type=int, default=None, help="C2ST batch (64; real-vs-real on a CPU: 32)")
    p.add_argument("--test-batches", type=int, default=10, help="held-out batch pairs averaged per critic")
    p.add_argument("--width", type=int, default=None, help="C2ST critic width (64 as the paper; calibrate: 16; "
                                                           "real-vs-real on a CPU: 8)")
    p.add_argument("--memory-gb", type=float, default=None, help="c2st, real-vs-real: memory for the critics, which "
                                                                 "train in groups that fit it (default: half the free "
                                                                 "memory on a CPU, 80%% on a GPU)")
    p.add_argument("--plan-only", action="store_true", help="c2st, real-vs-real: print how the critics would be "
                                                            "grouped and their peak memory, and stop")
    p.add_argument("--lr", type=float, default=None, help="C2ST critic learning rate (default: the reference's)")
    p.add_argument("--proteins", default=None, help="real-vs-real, calibrate: comma-separated proteins")
    p.add_argument("--method", default="auto", choices=["auto", "fast", "critic"],
                   help="c2st: the fast feature test (a linear classifier on cached features, permutation p-value) "
                        "or the paper's critic C2ST; auto: fast on a CPU, critic on a GPU")
    p.add_argument("--fast-iterations", type=int, default=600, help="c2st, calibrate: training iterations of the "
                                                                    "fast test's feature network (once per data set)")
    p.add_argument("--permutations", type=int, default=1000, help="c2st, calibrate: the fast test's permutations")
    p.add_argument("--no-critic", action="store_true", help="calibrate: leave out the paper's critic C2ST (its "
                                                            "budget: --steps, --splits, --width, --algorithm)")
    p.add_argument("--critic-only", action="store_true", help="calibrate: only the paper's critic C2ST (and the "
                                                              "nearest-neighbour check)")
    p.add_argument("--required-controls", action="store_true", help="calibrate: only the controls a verdict rests "
                                                                    "on (real vs real, blur σ=1, other protein)")
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
    em_options.add_argument("--sections-train", type=_sections, default=tuple(range(10)),
                            help="real training sections: the segmenter's data, the real-vs-real yardstick (0-9)")
    em_options.add_argument("--sections-val", type=_sections, default=tuple(range(10, 20)),
                            help="real validation sections (10-19)")
    em_options.add_argument("--size", type=int, default=None, help="side of the generated pairs (default: the "
                                                                   "validation sections')")
    em_options.add_argument("--segmenter", default="vnc-segmenter", help="the segmenter model (catalogue name or "
                                                                         ".safetensors; default: the shipped one)")
    em_options.add_argument("--train-segmenter", action="store_true",
                            help="train a segmenter on the training sections for this run instead")
    em_options.add_argument("--segmenter-iterations", type=int, default=2000, help="with --train-segmenter")
    em_options.add_argument("--segmenter-width", type=int, default=16, help="with --train-segmenter: base width")
    em_options.add_argument("--no-calibration", action="store_true",
                            help="skip the controls (real vs real, blurred, spoiled labels): no trust verdicts")
    em_options.add_argument("--c2st-steps", type=int, default=2000, help="critic steps of each C2ST")
    em_options.add_argument("--birthday-batch-sizes", type=int, nargs="+", default=[100, 200, 500, 1000])
    em_options.add_argument("--birthday-repeats", type=int, default=10)
    em_options.add_argument("--skip", nargs="+", default=[], choices=["segmentation", "statistics", "birthday", "c2st"],
                            help="parts to leave out")
    em_options.add_argument("--seed", type=int, default=0, help="generated pair i uses seed + i")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("interpolate", help="a cell-cycle interpolation between sampled codes, to OME-TIFF, OME-Zarr "
                                           "or .h5")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--anchors", type=int, nargs="+", default=[0, 1], help="indices of codes drawn with --seed")
    p.add_argument("--cycle", action="store_true", help="anchors for one cell cycle instead: a short cell, a grown "
                   "one and a long one, picked from 512 codes drawn with --seed (grow, then divide)")
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
    p.add_argument("--init-image-generator", default=None,
                   help="sgan/dsgan: start G_x from this EM model or train state (same architecture)")
    p.add_argument("--no-fake-cycle-into-gy", dest="fake_cycle_trains_gy", action="store_false",
                   help="dsgan: the cycle term on generated labels trains G_x only (the reference: G_y too)")
    p.add_argument("--freeze-image-generator", action="store_true",
                   help="dsgan: keep G_x as --init-image-generator gave it and train only G_y and D_y")
    p.add_argument("--diversity-weight", type=float, default=None,
                   help="sgan/dsgan: weight of the mode-seeking term that keeps G_y's samples apart (default 0.2; "
                        "0: off, the reference)")
    p.add_argument("--half", action="store_true", help="store the model file in float16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--keep-models-every", type=int, default=0, metavar="N",
                   help="also keep the model file of every N-th iteration in RUN/models/ (a multiple of "
                        "--checkpoint-every), to pick the best iteration afterwards")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop and save after this many minutes of training (resume continues)")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.set_defaults(func=cmd_train_em)

    p = sub.add_parser("render-em", help="render an EM image from a label map (codes 0/1/2) of any size")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--labels", default=None, help="label map PNG/TIFF; without it, one is generated")
    p.add_argument("--size", type=int, default=512, help="side of a generated label map")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output .png, .tif (OME-TIFF) or .ome.zarr (with the label map)")
    p.set_defaults(func=cmd_render_em)

    p = sub.add_parser("export", help="a generator as an ONNX model or a bioimage.io model package (needs the "
                                      "'export' extra)")
    p.add_argument("--model", required=True, help=MODEL_HELP + " (fluorescence generator or EM model)")
    p.add_argument("--format", default="onnx", choices=["onnx", "bioimageio"])
    p.add_argument("--out", default=None, help="output .onnx or .zip (default: <model>.onnx / <model>.zip)")
    p.add_argument("--seed", type=int, default=0, help="test codes; EM: the noise built into the model "
                                                      "(the one-pass renderer's noise seed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("view", help="open napari with the sample data, Generate cells and Paint EM at work")
    p.add_argument("--model", default="star-6", help="fluorescence model for Generate cells ('' for none)")
    p.add_argument("--em-model", default="vnc-dsgan", help="EM model for Paint EM ('' for none)")
    p.add_argument("--screenshot", default=None, help="save the window as this PNG once both are done, then quit")
    p.set_defaults(func=cmd_view)
    return parser


def main(argv=None) -> int:
    from .data.em import EMFormatError
    from .data.lin import LinFormatError

    args = build_parser().parse_args(argv)
    if args.command == "evaluate" and args.what != "real-vs-real":  # real vs real's defaults depend on the device
        from .evaluation.calibrate import CPU_CRITIC

        calibrate = args.what == "calibrate"  # calibrates the CPU budget the C2ST suggests on a CPU
        for option, default in (("splits", CPU_CRITIC["splits"] if calibrate else 10),
                                ("width", CPU_CRITIC["width"] if calibrate else 64),
                                ("batch_size", CPU_CRITIC["batch_size"] if calibrate else 64),
                                ("lr", CPU_CRITIC["lr"] if calibrate else None)):
            if getattr(args, option, 0) is None:
                setattr(args, option, default)
        if getattr(args, "steps", 0) is None:
            args.steps = {"reconstruct": 50, "calibrate": CPU_CRITIC["steps"]}.get(args.what, 5000)
    if getattr(args, "generated", 0) is None:
        args.generated = 10 if args.what == "em" else 500
    if getattr(args, "what", None) in ("c2st", "reconstruct", "em") and not args.model:
        print(f"biogans evaluate {args.what}: error: --model is required", file=sys.stderr)
        return 2
    if getattr(args, "what", None) in ("fid", "features") and not args.train:
        print(f"biogans evaluate {args.what}: error: --train is required", file=sys.stderr)
        return 2
    if getattr(args, "what", None) == "fid" and not args.model:
        print("biogans evaluate fid: error: --model is required", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (LinFormatError, EMFormatError, FileExistsError, ValueError, RuntimeError) as err:
        from .devices import out_of_memory_message

        print(f"biogans {args.command}: error: {out_of_memory_message(err) or err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only folder, a full disk: one line naming the path, never a traceback
        print(f"biogans {args.command}: error: {_os_error_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before or after a training's own handling of Ctrl-C
        print(f"biogans {args.command}: interrupted", file=sys.stderr)
        return 130


def _os_error_line(err: OSError) -> str:
    """A write error's own line; for one raised outside the atomic helper, ``cannot write <path>: <reason>``
    (read-only, full disk) or ``<path>: <reason>``."""
    import errno
    import os

    from .atomic import WriteError, describe_os_error

    if isinstance(err, WriteError) or not err.filename:
        return str(err)
    if err.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
        return describe_os_error(err, err.filename)
    return f"{err.filename}: {os.strerror(err.errno).lower() if err.errno else err}"


if __name__ == "__main__":
    sys.exit(main())
