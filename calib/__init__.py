"""Calibration-set manifests, installed as the package data ``edgekd._calib``."""
