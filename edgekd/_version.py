"""The package version: one place, read by pyproject.toml and by ``edgekd.__version__``."""

__version__ = "0.1.0"
