"""What every napari-biogans checkpoint shares: the format version and the one error its readers
raise (its own module so that the checkpoint reader and the model-file checks both import it)."""

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a napari-biogans checkpoint of the expected kind or architecture."""
