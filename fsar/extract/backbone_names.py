"""What the command line needs to know about the backbones, without importing torch.

The backbone registry (:mod:`fsar.extract.backbone`) registers exactly :data:`BACKBONE_NAMES`, in this
order; its precision and modality types, and the CPU check behind ``precision="auto"``, are the ones
defined here.
"""

from __future__ import annotations

from typing import Literal, get_args

#: ResNets built from torchvision, with the width of their last feature map (most used first).
RESNET_FEATURE_DIMS: dict[str, int] = {"resnet50": 2048, "resnet34": 512, "resnet18": 512}
EFFICIENTNET_LITE0 = "efficientnet_lite0"
BACKBONE_NAMES: tuple[str, ...] = (*RESNET_FEATURE_DIMS, EFFICIENTNET_LITE0)
DEFAULT_BACKBONE = "resnet50"
#: torchvision's file names for the ResNets' ImageNet weights, in order of preference.
TORCHVISION_FILES: dict[str, tuple[str, ...]] = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet34": ("resnet34-b627a593.pth",),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),  # IMAGENET1K_V1, IMAGENET1K_V2
}

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
Modality = Literal["rgb", "flow"]


def names_text() -> str:
    """The backbone names as a sentence: ``resnet50, resnet34, resnet18 or efficientnet_lite0``."""
    return f"{', '.join(BACKBONE_NAMES[:-1])} or {BACKBONE_NAMES[-1]}"


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
