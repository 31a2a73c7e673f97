"""The few CUDA runtime calls a TensorRT run needs, through ctypes (no pycuda/cuda-python)."""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
from typing import Any

from .errors import Missing


def cudart_candidates() -> list[str]:
    """Where libcudart may be: the loader's path (plain or versioned, as pip's CUDA wheels ship
    it), the pip wheel's own folder, and the CUDA toolkits under /usr/local."""
    names = ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]
    try:
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except ImportError:  # no "nvidia" namespace package
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        names += sorted(glob.glob(os.path.join(folder, "lib", "libcudart.so*")))
    return names + sorted(glob.glob("/usr/local/cuda*/lib64/libcudart.so*"))


class Cuda:
    """libcudart, loaded with the argument types of the calls used."""

    H2D, D2H = 1, 2  # cudaMemcpyKind

    def __init__(self) -> None:
        for name in cudart_candidates():
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            raise Missing("the CUDA runtime library (libcudart.so) is not found")
        p, size = ctypes.c_void_p, ctypes.c_size_t
        signatures: dict[str, list[Any]] = {
            "cudaMalloc": [ctypes.POINTER(p), size],
            "cudaFree": [p],
            "cudaMemcpyAsync": [p, p, size, ctypes.c_int, p],
            "cudaStreamCreate": [ctypes.POINTER(p)],
            "cudaStreamSynchronize": [p],
            "cudaStreamDestroy": [p],
            "cudaEventCreate": [ctypes.POINTER(p)],
            "cudaEventRecord": [p, p],
            "cudaEventSynchronize": [p],
            "cudaEventElapsedTime": [ctypes.POINTER(ctypes.c_float), p, p],
            "cudaEventDestroy": [p],
        }
        for name, argtypes in signatures.items():
            getattr(self.lib, name).argtypes = argtypes
            getattr(self.lib, name).restype = ctypes.c_int

    def call(self, name: str, *args: Any) -> None:
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise RuntimeError(f"{name} failed with CUDA error {status}")

    def new(self, kind: str) -> ctypes.c_void_p:
        """A new stream or event handle (``kind`` "Stream" or "Event")."""
        handle = ctypes.c_void_p()
        self.call(f"cuda{kind}Create", ctypes.byref(handle))
        return handle

    def malloc(self, nbytes: int) -> ctypes.c_void_p:
        ptr = ctypes.c_void_p()
        self.call("cudaMalloc", ctypes.byref(ptr), max(nbytes, 1))
        return ptr
