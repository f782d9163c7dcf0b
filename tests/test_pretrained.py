"""Every shipped model loads by name on the CPU, matches its card's hash and reproduces its seeded sample."""

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from napari_biogans import checkpoints, reference_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHIPPED = Path(str(resources.files("napari_biogans.pretrained")))
CARDS = sorted(SHIPPED.glob("*.json"))


def test_the_catalogue_ships_the_main_models_within_the_size_budget():
    names = {card.stem for card in CARDS}
    assert {"star-6", "one-class-sep-6", "vnc-dsgan"} <= names
    assert sum(f.stat().st_size for f in SHIPPED.iterdir()) < 40e6


def test_every_shipped_fluorescence_model_passes_the_catalogue_bar():
    """README: each protein is recognised in at least half as many generated as held-out real cells."""
    from napari_biogans.evaluation.fast_test import RECOGNITION_BAR

    generators = [json.loads(c.read_text()) for c in CARDS]
    generators = [card for card in generators if card["kind"] == "generator"]
    assert generators
    for card in generators:
        found = card["diagnostics"]["recognition"]["proteins"]
        assert set(found) == set(card["class_names"]), card["name"]
        for protein, r in found.items():
            assert r["passes"] and r["generated"] >= RECOGNITION_BAR * r["real"], (card["name"], protein)


@pytest.mark.parametrize("card_path", CARDS, ids=[c.stem for c in CARDS])
def test_shipped_model_loads_and_reproduces_its_reference_sample(card_path, monkeypatch):
    monkeypatch.delenv(checkpoints.MODELS_ENV, raising=False)
    card = json.loads(card_path.read_text())
    path = checkpoints.resolve_model(card_path.stem)  # by name, SHA-256 checked against the card
    assert path == card_path.with_suffix(".safetensors")
    for key in ("training_command", "iterations", "device", "diagnostics", "known_limits", "data"):
        assert card.get(key) not in (None, ""), key
    if card.get("simulated_training_data"):
        assert any("simulated" in limit for limit in card["known_limits"])
    stored = dict(np.load(SHIPPED / card["reference_sample"]["file"]))
    assert reference_samples.checksum(stored) == card["reference_sample"]["sha256"]
    fresh = reference_samples.reference(path, card["kind"])
    assert fresh.keys() == stored.keys()
    for key in stored:
        assert fresh[key].shape == stored[key].shape
        if key == "labels":  # argmax ties may flip a few pixels on another CPU
            assert np.mean(fresh[key] != stored[key]) < 0.002
        else:
            assert np.abs(fresh[key].astype(int) - stored[key].astype(int)).max() <= 1


def test_shipped_model_file_damage_is_detected(tmp_path, monkeypatch):
    card = CARDS[0]
    copy = tmp_path / card.with_suffix(".safetensors").name
    data = bytearray(card.with_suffix(".safetensors").read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    (tmp_path / card.name).write_text(card.read_text())
    with pytest.raises(checkpoints.CheckpointError, match="SHA-256"):
        checkpoints.checked_sha256(copy)
