"""Generators and discriminators (torch ``nn.Module``s only)."""
