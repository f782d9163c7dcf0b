"""napari dock widgets: thin views over the core."""
