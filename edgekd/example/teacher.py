"""Teacher architecture of the bundled example: a small VGG-style CNN for Fashion-MNIST.

The weights in ``teacher.pt`` (float16 state_dict) are produced by ``scripts/build_example.py``.
Load them with ``fashion_cnn().load_state_dict(torch.load(path, weights_only=True))``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FashionCNN", "fashion_cnn"]


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    """3x3 Conv2d (no bias) -> BatchNorm2d -> ReLU."""
    return [
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


def _stage(in_ch: int, out_ch: int, convs: int, pool: bool) -> nn.Sequential:
    """``convs`` conv-bn-relu layers at one resolution, optionally followed by 2x2 max-pooling."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += _conv_bn_relu(in_ch if i == 0 else out_ch, out_ch)
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class FashionCNN(nn.Module):
    """VGG-style CNN for 1x28x28 images (~1.15 M parameters).

    Stages (channels @ resolution): 32@28 -> 64@14 -> 128@7 -> 256@3, each stage
    Conv-BN-ReLU blocks then MaxPool; a global average pool, dropout and a Linear head.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _stage(1, 32, convs=1, pool=True),  # 28 -> 14
            _stage(32, 64, convs=2, pool=True),  # 14 -> 7
            _stage(64, 128, convs=2, pool=True),  # 7 -> 3
            _stage(128, 256, convs=2, pool=False),  # 3
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a (N, 1, 28, 28) normalised batch to (N, num_classes) logits."""
        return self.head(self.pool(self.features(x)))


def fashion_cnn(num_classes: int = 10) -> nn.Module:
    """Factory for the example teacher (``edgekd.example.teacher:fashion_cnn``)."""
    return FashionCNN(num_classes)
