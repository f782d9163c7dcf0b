"""Property-based fuzzing of every reader and of model files (the CI-sized cousin of scripts/fuzz.py).

Hypothesis picks a format, one of its mutations and the mutation's random choices; the mutated
input is read in a forked child with a time and memory limit. The contract: a clean one-line
error of the product's own type naming the file, or a read that passes every invariant (and
that equals the original when the mutation was harmless). Never a traceback, a hang, a crash or
a silent wrong read.
"""

import importlib.util
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz.py"
spec = importlib.util.spec_from_file_location("biogans_fuzz", SCRIPT)
fuzz = importlib.util.module_from_spec(spec)
sys.modules["biogans_fuzz"] = fuzz
spec.loader.exec_module(fuzz)

ACCEPTED = ("clean error", "read", "undetected")
# checkpoints.load (being rewritten in another branch) lets json.loads errors through; the
# lead drops this entry when the new loader catches them (test_model_checks has an xfail for it)
OUTSIDE_THIS_BRANCH: set[str] = set()
EXAMPLES = {  # 120 in all, seconds on two cores (scripts/fuzz.py runs 1,000 a format: 7,000 in issue 14)
    "LIN folder": 20,
    ".h5": 20,
    ".tif": 20,
    "VNC folder": 16,
    "label map": 16,
    "fluorescence model": 14,
    "EM model": 14,
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def check(fmt, data, tmp_path_factory):
    mutations = fuzz.FORMATS[fmt][2]
    allowed = [i for i, (name, _, _) in enumerate(mutations) if name not in OUTSIDE_THIS_BRANCH]
    which = data.draw(st.sampled_from(allowed), label="mutation")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    work = tmp_path_factory.mktemp("fuzz")
    name, expect, path, original, read = fuzz.prepare(fmt, work, random.Random(seed), which)
    outcome, detail = fuzz.run_in_child(expect, path, original, read, timeout=120, memory=2 * 2**30)
    assert outcome in ACCEPTED, f"{fmt} [{name}]: {outcome}: {detail}"
    if expect == "error":
        assert outcome == "clean error", f"{fmt} [{name}] must be refused: {detail}"


def _fuzz_test(fmt):
    @settings(
        max_examples=EXAMPLES[fmt],
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def test(data, tmp_path_factory):
        check(fmt, data, tmp_path_factory)

    test.__name__ = f"test_fuzz_{fmt.replace(' ', '_').replace('.', '')}"
    return test


for _fmt in fuzz.FORMATS:
    globals()[f"test_fuzz_{_fmt.replace(' ', '_').replace('.', '').lower()}"] = _fuzz_test(_fmt)


def test_every_format_has_mutations_that_must_be_refused():
    for fmt, (_, _, mutations) in fuzz.FORMATS.items():
        assert any(expect == "error" for _, expect, _ in mutations), fmt
        assert len(mutations) >= 4, fmt
