"""Shared test set-up: napari's test plugin manager blocks discovery, so register what we use."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")  # CI has two cores


try:  # a GPU machine runs the core's CUDA tests without napari (scripts/gpu/check.sh)
    import napari  # noqa: F401
except ImportError:
    napari = None

if napari is not None:

    @pytest.fixture(autouse=True)
    def _registered_plugins(npe2pm):
        """Our plugin and napari's builtins (TIFF reading), as an installed napari would have them."""
        from npe2 import PluginManifest

        for dist in ("napari", "napari-biogans"):
            manifest = PluginManifest.from_distribution(dist)
            if manifest.name not in npe2pm:
                npe2pm.register(manifest)
        yield npe2pm


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one thread is as fast, and immune to oversubscription on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
