"""Shipped generator weights and model cards; see README.md in this folder."""
