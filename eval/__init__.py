"""Shipped inside the package as data (see pyproject.toml): found with importlib.resources, not imported for code."""
