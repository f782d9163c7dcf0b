"""The package as a user meets it: manifest, console script, light import, README commands."""

import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import napari_biogans

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_validates():
    result = subprocess.run(["npe2", "validate", "napari-biogans"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_manifest_declares_readers_writer_samples():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-biogans")
    assert len(manifest.contributions.readers) == 3  # LIN folders, .h5, the product's OME-TIFF / OME-Zarr
    assert len(manifest.contributions.writers) == 2  # .h5 cell stacks, OME-TIFF / OME-Zarr
    assert {s.key for s in manifest.contributions.sample_data} == {"simulated_lin", "vnc_em"}


def test_console_script_version():
    result = subprocess.run(["biogans", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.strip() == f"napari-biogans {napari_biogans.__version__}"


def test_import_is_light():
    code = "import sys, napari_biogans, napari_biogans.data.lin; print(sorted(m for m in ('torch', 'napari', 'qtpy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_pretrained_folder_is_installed():
    names = [p.name for p in resources.files("napari_biogans.pretrained").iterdir()]
    assert "README.md" in names


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = ci.split("# README test command:\n", 1)[1].strip().splitlines()[0]
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.S)
    assert any(command in block for block in blocks), command


def test_models_resolve_by_name_from_a_source_checkout(tmp_path):
    """The GPU machine runs the package from src/ without installing it: names still resolve."""
    code = ("import sys; sys.path.insert(0, 'src'); from napari_biogans import checkpoints; "
            "print(checkpoints.resolve_model('star-6'))")
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Path(result.stdout.strip()) == ROOT / "pretrained" / "star-6.safetensors"
