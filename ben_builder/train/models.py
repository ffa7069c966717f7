"""Models: the multi-branch CNN of the 2019 BigEarthNet work, and ResNet-50 with 12 input bands.

torchvision's ResNet is not used: PyPI's torchvision does not import beside the CPU build of
PyTorch this project pins, so ResNet-50 (bottleneck blocks 3-4-6-3, He et al. 2016) is defined
here in the usual way.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))  # fmt: skip


class MultiBranchCNN(nn.Module):
    """One convolutional branch per resolution at its native size, concatenated, then dense."""

    def __init__(self, channels: dict[int, int], classes: int, width: int = 32) -> None:
        super().__init__()
        self.keys = sorted(channels)
        self.branches = nn.ModuleDict({
            str(r): nn.Sequential(
                _conv_bn(channels[r], width), _conv_bn(width, width), nn.MaxPool2d(2),
                _conv_bn(width, 2 * width), _conv_bn(2 * width, 2 * width),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            ) for r in self.keys
        })  # fmt: skip
        self.head = nn.Sequential(nn.Linear(2 * width * len(self.keys), 128), nn.ReLU(inplace=True),
                                  nn.Dropout(0.25), nn.Linear(128, classes))  # fmt: skip

    def forward(self, xs: dict[int, torch.Tensor]) -> torch.Tensor:
        """Logits from ``{resolution: (batch, bands, h, w)}``."""
        return self.head(torch.cat([self.branches[str(r)](xs[r]) for r in self.keys], dim=1))


class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1, 3x3, 1x1; expansion 4)."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = 4 * width
        self.body = nn.Sequential(
            _conv_bn(cin, width, 1), _conv_bn(width, width, 3, stride),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))  # fmt: skip
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block."""
        return self.relu(self.body(x) + self.skip(x))


class ResNet50(nn.Module):
    """ResNet-50 taking ``in_channels`` bands stacked at one size."""

    def __init__(self, in_channels: int, classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
        ]  # fmt: skip
        cin = 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = 4 * width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from ``(batch, bands, h, w)``."""
        return self.fc(self.features(x))
