"""The GPU runbook (scripts/gpu) end to end on the CPU with SMOKE=1: the three device calls, their
packing into parts under the per-file limit, unpacking, and the cards and comparison they produce.
A device session has minutes, not hours, to find out that a script is broken. SMOKE=1 bounds every
step by its work (4 training iterations, 2 evaluation steps), not by a clock, so a loaded machine
only makes it slower."""

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.runbook  # deselected by default (pyproject addopts): `python -m pytest -m runbook`

ROOT = Path(__file__).resolve().parents[1]


def _stage(script: str, out: Path, work: Path, **env) -> str:
    environment = {**os.environ, "SMOKE": "1", "OUT": str(out), "WORK": str(work), **env}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu" / script)], capture_output=True, text=True,
                            env=environment)
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
    assert result.returncode == 0, result.stderr[-3000:] + log[-3000:]
    assert not re.search(r"\bfailed(:|$)", log, re.M), log[-3000:]  # a stage's own "X failed" (not "failed controls")
    return log


def test_three_device_calls_run_on_cpu(tmp_path):
    work, results = tmp_path / "work", tmp_path / "results"
    calls = [tmp_path / f"call{i}" for i in (1, 2, 3)]
    _stage("fluorescence.sh", calls[0], work)
    assert "| tuned" in (calls[0] / "bench_train.md").read_text()
    assert "C2ST, 10 critics" not in (calls[0] / "bench_eval.md").read_text()  # smoke: 2 splits
    _stage("em.sh", calls[1], work)
    assert "tiled" in (calls[1] / "bench_em_render.md").read_text()
    for call in calls[:2]:
        parts = sorted(call.glob("*.tar.gz.part*"))
        assert parts and len(list(call.iterdir())) <= 8
        assert all(p.stat().st_size <= 15 * 2**20 for p in parts)
    env = {**os.environ, "RESULTS_DIR": str(results)}
    subprocess.run(["bash", str(ROOT / "scripts" / "gpu" / "unpack.sh"), *map(str, calls[:2])], check=True, env=env,
                   capture_output=True)
    for run in ("fluorescence/star-6", "fluorescence/one-class-sep-2", "fluorescence/projection-8",
                "em/cgan-6", "em/multichannel-masked-6", "em/projection-6"):
        assert (results / run / "generator.safetensors").is_file(), run
        assert (results / run / "command.txt").read_text().startswith("biogans simulate")
    assert (results / "em" / "vnc-dsgan" / "em_model.safetensors").is_file()
    assert (results / "em" / "pretrained" / "vnc-dsgan.json").is_file()

    _stage("publish.sh", calls[2], work, RESULTS=str(results))
    subprocess.run(["bash", str(ROOT / "scripts" / "gpu" / "unpack.sh"), str(calls[2])], check=True, env=env,
                   capture_output=True)
    for name in ("star-6", "one-class-sep-2", "projection-8"):
        card = (results / "pretrained" / f"{name}.md").read_text()
        assert "C2ST" in card and "biogans train" in card, name
    table = (results / "comparison" / "comparison.md").read_text()
    for column in ("star-6 FID", "cgan C2ST", "multichannel-masked FID", "projection C2ST"):
        assert column in table


def test_the_cuda_check_runs_on_cpu(tmp_path):
    """scripts/gpu/check.sh (issue 19's one device call) with SMOKE=1: two CUDA tests on the CPU, tiny benchmarks."""
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu" / "check.sh")], capture_output=True, text=True,
                            env={**os.environ, "SMOKE": "1", "OUT": str(out), "BUDGET_S": "100000"})
    log = (out / "check.md").read_text()
    assert result.returncode == 0 and "pytest exit 0: 2 passed" in log, log + result.stderr[-2000:]
    for bench in ("bench_train", "bench_eval", "bench_generate"):
        assert "| " in (out / f"{bench}.md").read_text(), bench
