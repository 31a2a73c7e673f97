"""Student families: small CNNs with width and depth multipliers, chosen by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class StudentSpec:
    """One member of a student family."""

    family: str
    width: float
    depth: float

    @property
    def label(self) -> str:
        return f"{self.family}(width={self.width:g}, depth={self.depth:g})"


def _channels(base: int, width: float) -> int:
    """Scale a channel count and round to a multiple of 8 (what int8 kernels vectorise over)."""
    return max(8, int(round(base * width / 8)) * 8)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ConvNet(nn.Module):
    """VGG-style CNN: a stem, then stages that halve the resolution, then pool and a linear head.

    ``width`` scales the channels (16, 32, 64 at 1.0); ``depth`` scales the convolutions per stage
    (2 at 1.0). Plain Conv-BN-ReLU and max-pooling: every op has an integer kernel in ONNX Runtime
    and TensorRT, so the whole network can run in INT8.
    """

    base_widths = (16, 32, 64)
    base_depth = 2

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0, depth: float = 1.0):
        super().__init__()
        blocks = max(1, int(round(self.base_depth * depth)))
        widths = [_channels(b, width) for b in self.base_widths]
        layers: list[nn.Module] = [_conv_bn_relu(in_channels, widths[0])]
        cin = widths[0]
        for i, cout in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(blocks if i > 0 else blocks - 1):
                layers.append(_conv_bn_relu(cin, cout))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))


FAMILIES: dict[str, Callable[..., nn.Module]] = {"convnet": ConvNet}
WIDTHS = (0.25, 0.375, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
DEPTHS = (0.5, 1.0, 1.5, 2.0)


def build_student(spec: StudentSpec, in_channels: int, num_classes: int) -> nn.Module:
    """Instantiate ``spec`` for the given input channels and class count."""
    return FAMILIES[spec.family](in_channels, num_classes, width=spec.width, depth=spec.depth)


def candidates(family: str = "convnet") -> list[StudentSpec]:
    """Every member of ``family`` that the sizing rule considers."""
    return [StudentSpec(family, w, d) for w in WIDTHS for d in DEPTHS]
