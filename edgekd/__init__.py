"""edgekd: distil a teacher into a small INT8 student for an edge device, and prove it."""

__version__ = "0.1.0"
