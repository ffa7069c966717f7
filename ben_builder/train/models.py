"""Models: the multi-branch CNN of the 2019 BigEarthNet work, and torchvision's ResNet-50.

ResNet-50 is torchvision's, untouched but for its stem: the first convolution takes the bands
given (12 in ESA order by default) instead of RGB, so a state dict saved here loads into
``torchvision.models.resnet50`` with the same stem, and one trained elsewhere loads here.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class MultiBranchCNN(nn.Module):
    """One convolutional branch per resolution at its native size, concatenated, then dense."""

    def __init__(self, channels: dict[int, int], classes: int, width: int = 32) -> None:
        super().__init__()
        self.keys = sorted(channels)
        self.branches = nn.ModuleDict(
            {
                str(r): nn.Sequential(
                    _conv_bn(channels[r], width),
                    _conv_bn(width, width),
                    nn.MaxPool2d(2),
                    _conv_bn(width, 2 * width),
                    _conv_bn(2 * width, 2 * width),
                    nn.AdaptiveAvgPool2d(1),
                    nn.Flatten(),
                )
                for r in self.keys
            }
        )
        self.head = nn.Sequential(
            nn.Linear(2 * width * len(self.keys), 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.25),
            nn.Linear(128, classes),
        )

    def forward(self, xs: dict[int, torch.Tensor]) -> torch.Tensor:
        """Logits from ``{resolution: (batch, bands, h, w)}``."""
        return self.head(torch.cat([self.branches[str(r)](xs[r]) for r in self.keys], dim=1))


def resnet50(in_channels: int, classes: int) -> nn.Module:
    """The ResNet-50 of torchvision (random weights) with an ``in_channels``-band stem."""
    model = torchvision.models.resnet50(weights=None, num_classes=classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model
