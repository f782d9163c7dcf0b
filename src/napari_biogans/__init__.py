"""napari-biogans: generative models of cells (fission-yeast fluorescence and EM) in napari.

Importing the package is cheap: torch, napari and Qt are imported only by the modules that need
them, so napari's plugin discovery and ``biogans --help`` stay fast.
"""

__version__ = "0.1.0"
