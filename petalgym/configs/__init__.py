"""Shipped configuration files: scenarios/*.yaml and agents/*.yaml (read with importlib.resources)."""
