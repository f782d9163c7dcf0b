"""Readers, writers and the fission-yeast simulator (numpy, scikit-image, tifffile, h5py only)."""
