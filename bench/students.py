"""Fixed students for the benchmarks (``--student bench/students.py:NAME``)."""

from __future__ import annotations

from torch import nn

from edgekd.models.students import ConvNet


def convnet_half(num_classes: int = 10) -> nn.Module:
    """ConvNet(width 0.5, depth 1): 18,482 parameters on 1x28x28, 63x fewer than the teacher."""
    return ConvNet(1, num_classes, width=0.5, depth=1.0)


def convnet_quarter(num_classes: int = 10) -> nn.Module:
    """ConvNet(width 0.25, depth 1): 5,554 parameters on 1x28x28, 22x fewer than the bundled
    example's student (``convnet_example``)."""
    return ConvNet(1, num_classes, width=0.25, depth=1.0)


def mlp_800(num_classes: int = 10) -> nn.Module:
    """Hinton et al.'s MNIST student: 784-800-800-10, ReLU, no dropout."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 800), nn.ReLU(), nn.Linear(800, 800), nn.ReLU(),
        nn.Linear(800, num_classes),
    )  # fmt: skip


def mlp_1200(num_classes: int = 10) -> nn.Module:
    """Hinton et al.'s MNIST teacher: 784-1200-1200-10, ReLU, dropout on inputs and hidden units."""
    return nn.Sequential(
        nn.Flatten(), nn.Dropout(0.2), nn.Linear(784, 1200), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(1200, 1200), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1200, num_classes),
    )  # fmt: skip


def convnet_example(num_classes: int = 10) -> nn.Module:
    """ConvNet(width 1, depth 1.5): 121,274 parameters, the student edgekd sizes for host-cpu on
    Fashion-MNIST (the bundled example's), fixed so that other targets' schemes can use it."""
    return ConvNet(1, num_classes, width=1.0, depth=1.5)
