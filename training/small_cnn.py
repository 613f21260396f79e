"""The digits CNN on its own, importing nothing but torch, so a PyTorch serving baseline can load it cheaply."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """forward(pixels [batch, 1, 8, 8] in 0..1) -> logits."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(64 * 4 * 4, 128),
            nn.ReLU(),
            nn.Linear(128, num_labels),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(pixels))
