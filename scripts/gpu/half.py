"""Copy run folders without their training state: generators in half precision, loss logs, montages.

    python scripts/gpu/half.py RUNS_DIR DEST_DIR

Each ``RUNS_DIR/NAME`` becomes ``DEST_DIR/NAME`` with ``generator.safetensors`` (float16) or
``em_model.safetensors`` (EM runs are trained with ``--half``), ``losses.csv``, ``command.txt`` and
``samples.png``:
what ``scripts/publish_model.py --run`` needs, small enough to come back from a device call.
"""

import shutil
import sys
from pathlib import Path

from napari_biogans import checkpoints

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for the montage of publish_model
from publish_model import write_montage


def main(runs: Path, dest: Path) -> None:
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        target = dest / run.name
        target.mkdir(parents=True, exist_ok=True)
        for kept in ("losses.csv", "command.txt"):
            if (run / kept).is_file():
                shutil.copy(run / kept, target / kept)
        if (run / "generator.safetensors").is_file():
            generator, meta = checkpoints.load_generator(run / "generator.safetensors")
            meta = {k: v for k, v in meta.items() if k not in ("kind", "config", "normalisation", "dtype", "versions",
                                                                "format")}
            checkpoints.save_generator(target / "generator.safetensors", generator, meta, half=True)
            write_montage(target / "generator.safetensors", target / "samples.png")
        elif (run / "em_model.safetensors").is_file():
            shutil.copy(run / "em_model.safetensors", target / "em_model.safetensors")
        else:
            print(f"{run}: no model file (the run failed before its first checkpoint)")
            continue
        size = sum(f.stat().st_size for f in target.iterdir()) / 1e6
        print(f"{run.name}: {size:.1f} MB -> {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
