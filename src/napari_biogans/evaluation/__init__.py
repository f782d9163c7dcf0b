"""C2ST, reconstruction, interpolation and EM metrics."""
