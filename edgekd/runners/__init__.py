"""Runners: load a model, run it, time it. One interface for every runtime."""
