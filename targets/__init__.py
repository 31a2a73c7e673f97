"""Bundled target profiles (package data; see edgekd.targets)."""
