"""Shared test set-up: napari's test plugin manager blocks discovery, so register what we use."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")  # CI has two cores


@pytest.fixture(autouse=True)
def _registered_plugins(npe2pm):
    """Our plugin and napari's builtins (TIFF reading), as an installed napari would have them."""
    from npe2 import PluginManifest

    for dist in ("napari", "napari-biogans"):
        manifest = PluginManifest.from_distribution(dist)
        if manifest.name not in npe2pm:
            npe2pm.register(manifest)
    yield npe2pm
