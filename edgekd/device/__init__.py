"""What runs on the device: load one model in ONNX Runtime or TensorRT, predict, time, fingerprint.

Imports nothing from the rest of edgekd and needs only the standard library (Python >= 3.8, as on
JetPack 5), numpy and the runtime in use, so that :mod:`edgekd.runners.bundle` can ship it to a
device as one zipapp. The host's runners, engine build, drift and teacher loading call the same
functions, so a session or an engine is made one way whichever side makes it.
"""
