"""Objectives and the one training loop."""
