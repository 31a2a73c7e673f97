"""Student families, chosen by name: edgekd's own ``convnet`` and architectures proven on edge
hardware, built from torchvision and timm when those import.

Every family is built for the data's input channels (grayscale too: the stem convolution takes
them) and class count, and scaled by a width and a depth multiplier. Each says which quantization
schemes run all of its activations in INT8 (:attr:`Family.int8_schemes`): ReLU and ReLU6 fuse
into the integer convolutions of TensorRT, QNN and ONNX Runtime; hardswish and the
hardsigmoid of squeeze-excitation do not.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from torch import nn

from edgekd.errors import BadInput

INT8_ALL = ("onnxruntime", "tensorrt", "qnn")


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


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def stem_halvings(input_size: int | None) -> int:
    """How often the convnet's stem halves an input of ``input_size`` pixels (the larger side),
    so that its first stage runs at 32 pixels or less: none for MNIST/CIFAR sizes, three at 224
    (a stride-2 convolution, then max-pools: the stride-8 stem of the published edge networks)."""
    if not input_size or input_size <= 32:
        return 0
    return math.ceil(math.log2(input_size / 32))


class ConvNet(nn.Module):
    """VGG-style CNN: a stem, then stages that halve the resolution, then pool and a linear head.

    ``width`` scales the channels (16, 32, 64 at 1.0); ``depth`` scales the convolutions per stage
    (2 at 1.0). Inputs larger than 32 pixels are downsampled in the stem (:func:`stem_halvings`):
    at full resolution a 224x224 input would cost more compute than a ResNet-18. Plain Conv-BN-ReLU and max-pooling: every op has an integer kernel in ONNX Runtime
    and TensorRT, so the whole network can run in INT8.
    """

    base_widths = (16, 32, 64)
    base_depth = 2

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: float = 1.0,
        depth: float = 1.0,
        input_size: int | None = None,
    ):
        super().__init__()
        blocks = max(1, int(round(self.base_depth * depth)))
        widths = [_channels(b, width) for b in self.base_widths]
        halvings = stem_halvings(input_size)
        layers: list[nn.Module] = [_conv_bn_relu(in_channels, widths[0], 2 if halvings else 1)]
        layers += [nn.MaxPool2d(2) for _ in range(halvings - 1)]
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


def _restem(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """``conv`` (a stem convolution built for RGB) rebuilt for ``in_channels`` inputs."""
    if conv.in_channels == in_channels:
        return conv
    return nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        bias=conv.bias is not None,
    )  # fmt: skip


def _resnet(in_channels: int, num_classes: int, width: float, depth: float) -> nn.Module:
    """timm's ResNet with torchvision's BasicBlock layout (ResNet-18 at width 1, depth 1).

    timm, not torchvision: torchvision's ResNet fixes the widths at 64-512 and its BasicBlock
    refuses other base widths, while timm's takes the stage widths. Its plain 7x7 stem is fixed
    at 64 channels, so the narrow members use timm's deep stem (three 3x3 convolutions ending at
    the first stage's width, as in ResNet-C/D)."""
    from timm.models.resnet import BasicBlock, ResNet

    channels = tuple(_channels(c, width) for c in (64, 128, 256, 512))
    blocks = max(1, int(round(2 * depth)))
    return ResNet(
        BasicBlock, (blocks,) * 4, num_classes=num_classes, in_chans=in_channels,
        channels=channels, stem_type="deep", stem_width=max(4, channels[0] // 2),
    )  # fmt: skip


def _mobilenet_v2(in_channels: int, num_classes: int, width: float, depth: float) -> nn.Module:
    """torchvision's MobileNetV2 at ``width_mult`` (ReLU6, no squeeze-excitation)."""
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2(weights=None, num_classes=num_classes, width_mult=width)
    model.features[0][0] = _restem(model.features[0][0], in_channels)
    return model


def _mobilenet_v3_small(
    in_channels: int, num_classes: int, width: float, depth: float
) -> nn.Module:
    """torchvision's MobileNetV3-Small at ``width_mult`` (hardswish, hardsigmoid SE)."""
    from torchvision.models import mobilenet_v3_small

    model = mobilenet_v3_small(weights=None, num_classes=num_classes, width_mult=width)
    model.features[0][0] = _restem(model.features[0][0], in_channels)
    return model


def _efficientnet_lite(in_channels: int, num_classes: int, width: float, depth: float) -> nn.Module:
    """timm's EfficientNet-Lite0 with channel and depth multipliers (ReLU6, no SE: the variant
    Google made for integer accelerators). timm's ``efficientnet_lite0`` entry point fixes both
    multipliers at 1, so its generator is called with them."""
    from timm.models.efficientnet import _gen_efficientnet_lite

    return _gen_efficientnet_lite(
        "efficientnet_lite0", channel_multiplier=width, depth_multiplier=depth,
        in_chans=in_channels, num_classes=num_classes,
    )  # fmt: skip


def _regnet_x(in_channels: int, num_classes: int, width: float, depth: float) -> nn.Module:
    """torchvision's RegNet class with the paper's RegNetX-200MF settings (depth 13, w0 24,
    wa 36.44, wm 2.49, group width 8), widths and depth scaled; torchvision ships no model
    under 400 MF. ReLU, no SE."""
    import torch
    from torchvision.models.regnet import BlockParams, RegNet

    with torch.device("cpu"):  # the widths are computed with tensors: not on the meta device
        params = BlockParams.from_init_params(
            depth=max(4, int(round(13 * depth))), w_0=_channels(24, width), w_a=36.44 * width,
            w_m=2.49, group_width=8,
        )  # fmt: skip
    model = RegNet(params, num_classes=num_classes, stem_width=_channels(32, width))
    model.stem[0] = _restem(model.stem[0], in_channels)
    return model


@dataclass(frozen=True)
class Family:
    """A student architecture scaled by width and depth multipliers."""

    name: str
    build: Callable[[int, int, float, float], nn.Module]  # in_channels, classes, width, depth
    widths: tuple[float, ...]
    depths: tuple[float, ...]
    requires: tuple[str, ...]  # modules that must import
    activation: str
    int8_schemes: tuple[str, ...]  # schemes under which every activation fuses into INT8
    proven: bool  # a published architecture deployed on edge hardware

    def int8_friendly(self, scheme: str | None) -> bool:
        """Whether the family runs entirely in INT8 under ``scheme`` (None/"none": no INT8)."""
        return scheme in (None, "none") or scheme in self.int8_schemes


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "convnet", ConvNet, (0.25, 0.375, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0),
            (0.5, 1.0, 1.5, 2.0), (), "relu", INT8_ALL, proven=False,
        ),
        Family(
            "resnet", _resnet, (0.125, 0.25, 0.375, 0.5, 0.75, 1.0), (0.5, 1.0),
            ("timm",), "relu", INT8_ALL, proven=True,
        ),
        Family(
            "mobilenet_v2", _mobilenet_v2, (0.25, 0.35, 0.5, 0.75, 1.0, 1.4), (1.0,),
            ("torchvision",), "relu6", INT8_ALL, proven=True,
        ),
        Family(
            "efficientnet_lite", _efficientnet_lite, (0.25, 0.35, 0.5, 0.75, 1.0), (0.5, 1.0),
            ("timm",), "relu6", INT8_ALL, proven=True,
        ),
        Family(
            "regnet_x", _regnet_x, (0.25, 0.5, 0.75, 1.0, 1.5), (0.5, 1.0),
            ("torchvision",), "relu", INT8_ALL, proven=True,
        ),
        Family(
            "mobilenet_v3_small", _mobilenet_v3_small, (0.5, 0.75, 1.0), (1.0,),
            ("torchvision",), "hardswish", (), proven=True,
        ),
    )
}  # fmt: skip


@cache
def _import_error(module: str) -> str | None:
    """Why ``module`` does not import here, or None when it does (a torchvision built for
    another torch fails at import, not at lookup, so the import itself is tried)."""
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - a broken install raises anything
        return (
            f"{module} does not import ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        )
    return None


def unavailable() -> dict[str, str]:
    """Families that cannot be built here, each with the reason."""
    out = {}
    for name, fam in FAMILIES.items():
        reasons = [r for r in map(_import_error, fam.requires) if r]
        if reasons:
            out[name] = "; ".join(reasons)
    return out


def available() -> list[str]:
    """Names of the families that can be built here (``convnet`` always)."""
    missing = unavailable()
    return [name for name in FAMILIES if name not in missing]


def get_family(name: str) -> Family:
    """The family called ``name``; BadInput when unknown or not importable here."""
    if name not in FAMILIES:
        raise BadInput(f"unknown student family {name!r}; valid: {', '.join(FAMILIES)}, auto")
    missing = unavailable().get(name)
    if missing:
        raise BadInput(f"student family {name!r} is unavailable: {missing}; install edgekd[zoo]")
    return FAMILIES[name]


def build_student(
    spec: StudentSpec, in_channels: int, num_classes: int, input_size: int | None = None
) -> nn.Module:
    """Instantiate ``spec`` for the given input channels, class count and input size (the larger
    side, in pixels). The published families keep the stems their papers give; only ``convnet``
    adapts its stem to the input size."""
    fam = get_family(spec.family)
    if fam.build is ConvNet:
        return ConvNet(in_channels, num_classes, spec.width, spec.depth, input_size)
    return fam.build(in_channels, num_classes, spec.width, spec.depth)


def candidates(family: str = "convnet") -> list[StudentSpec]:
    """Every member of ``family`` that the sizing rule considers."""
    fam = get_family(family)
    return [StudentSpec(family, w, d) for w in fam.widths for d in fam.depths]
