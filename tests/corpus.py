"""The model corpus: classifiers people deploy, from torchvision and timm (``pretrained=False``:
nothing is downloaded), and edgekd's own student family.

Each entry is a factory called without arguments (``tests/corpus.py:resnet18`` works as a
``--teacher`` or ``--student`` spec) that builds a 10-class RGB model. ``available()`` says which
entries this environment can build: torchvision and timm are optional imports.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from torch import nn

NUM_CLASSES = 10

TORCHVISION = (
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "regnet_x_400mf",
    "shufflenet_v2_x0_5",
    "convnext_tiny",
)
TIMM = ("efficientnet_lite0", "mobilenetv3_small_100")
OWN = ("convnet",)
# The architectures each test runs as a student: resnet50 and convnext_tiny are teachers only
# (a student 8x smaller than them is what edgekd is for), the rest both.
TEACHERS_ONLY = ("resnet50", "convnext_tiny")


def has(module: str) -> bool:
    """Whether ``module`` imports here (torchvision beside a CPU torch it was not built for does
    not, so try the import itself, not just the spec)."""
    if importlib.util.find_spec(module) is None:
        return False
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a broken install raises anything (RuntimeError, OSError)
        return False
    return True


def build(name: str, num_classes: int = NUM_CLASSES) -> nn.Module:
    """A fresh, randomly initialised ``name``."""
    if name in TORCHVISION:
        import torchvision

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if name in TIMM:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    if name == "convnet":
        from edgekd.models.students import StudentSpec, build_student

        return build_student(StudentSpec("convnet", 1.0, 1.0), 3, num_classes)
    raise KeyError(f"{name!r} is not in the corpus")


def available() -> list[str]:
    """Corpus entries this environment can build."""
    names = list(OWN)
    if has("torchvision"):
        names += TORCHVISION
    if has("timm"):
        names += TIMM
    return names


def _factory(name: str) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        return build(name)

    make.__name__ = make.__qualname__ = name
    make.__doc__ = f"{name} with {NUM_CLASSES} classes, randomly initialised."
    return make


for _name in (*TORCHVISION, *TIMM, *OWN):
    globals()[_name] = _factory(_name)
