"""Backbones: registry contract, ImageNet wiring (real photos), weight files, flow input, precision."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from torch import nn

from fsar.extract.backbone import (
    BACKBONES,
    file_sha256,
    load_backbone,
    register_backbone,
    save_checkpoint,
)
from fsar.extract.efficientnet_lite import packaged_weights_path
from fsar.extract.transforms import CropConfig, centre_view

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def lite0() -> object:
    return load_backbone("efficientnet_lite0", "imagenet", "cpu")


def photo(name: str, size: int = 224) -> NDArray[np.uint8]:
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")
    return centre_view(getattr(data, name)()[None], CropConfig(resize_short=256 * size // 224, crop=size))


def random_frames(n: int, size: int, channels: int = 3) -> NDArray[np.uint8]:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def stem_weight(model: nn.Module) -> torch.Tensor:
    conv = model.get_submodule("_conv_stem")
    assert isinstance(conv, nn.Conv2d)
    return conv.weight


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_contract_random_init(name: str) -> None:
    backbone = load_backbone(name, "none", "cpu")
    pooled, patches = backbone.extract(random_frames(3, 64), patches=2, precision="fp32")
    d = backbone.feature_dim
    assert pooled.shape == (3, d) and pooled.dtype == np.float32
    assert patches is not None and patches.shape == (3, 4, d)
    np.testing.assert_allclose(patches.mean(axis=1), pooled, rtol=1e-4, atol=1e-5)
    assert backbone.weights_sha256 is None
    assert backbone.extract(random_frames(1, 64), precision="fp32")[1] is None


def test_features_match_a_hand_normalised_forward_across_batches() -> None:
    backbone = load_backbone("resnet18", "none", "cpu")
    frames = random_frames(5, 32)
    p = backbone.preprocessing
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).double() / 255
    x = (x - torch.tensor(p.mean).view(1, 3, 1, 1)) / torch.tensor(p.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        fmap = backbone.module(x.float())
    pooled, grid = backbone.features(frames, patches=1, batch_size=2, precision="fp32")  # batches of 2, 2, 1
    assert pooled.dtype == torch.float32 and pooled.device == backbone.device and grid is not None
    np.testing.assert_allclose(pooled.numpy(), fmap.mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grid[:, 0].numpy(), pooled.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(backbone.extract(frames, batch_size=2, precision="fp32")[0], pooled.numpy())
    # A changed preprocessing (as fine-tuning sets it) is what the next call normalises with.
    backbone.preprocessing = replace(p, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    with torch.inference_mode():
        unnormalised = backbone.module(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_allclose(backbone.extract(frames, precision="fp32")[0],
                               unnormalised.mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("image", "classes"), [("chelsea", set(CAT_CLASSES)), ("coffee", CUP_CLASSES)])
def test_lite0_classifies_real_photos(lite0, image: str, classes: set[int]) -> None:
    x = lite0.to_input(photo(image))
    with torch.inference_mode():
        logits = lite0.model(x)
        from_pooled = lite0.model._fc(lite0.forward(x)[0])
    assert int(logits.argmax()) in classes
    torch.testing.assert_close(from_pooled, logits, rtol=1e-4, atol=1e-4)


def test_lite0_weights_identity(lite0) -> None:
    path = packaged_weights_path()
    assert lite0.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert lite0.feature_dim == 1280 and lite0.preprocessing.channels == 3


def test_strict_loading(tmp_path: Path) -> None:
    state = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    missing = dict(state)
    missing.pop("_blocks.3._bn1.running_var")
    extra = dict(state, **{"_blocks.99.weight": torch.zeros(1)})
    for bad, word in ((missing, "missing"), (extra, "unexpected")):
        torch.save(bad, tmp_path / "bad.pth")
        with pytest.raises(ValueError, match=word):
            load_backbone("efficientnet_lite0", tmp_path / "bad.pth")


def test_torchvision_cache_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"resnet18-f37072fd\.pth.*checkpoints"):
        load_backbone("resnet18", "imagenet")
    (tmp_path / "checkpoints").mkdir()
    reference = load_backbone("resnet18", "none")
    torch.save(reference.model.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    loaded = load_backbone("resnet18", "imagenet")
    assert loaded.weights_sha256 == file_sha256(tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    frames = random_frames(2, 64)
    np.testing.assert_allclose(loaded.extract(frames, precision="fp32")[0],
                               reference.extract(frames, precision="fp32")[0], rtol=1e-5, atol=1e-6)


def test_finetuned_checkpoint_round_trip(lite0, tmp_path: Path) -> None:
    tuned = load_backbone("efficientnet_lite0", "imagenet")
    with torch.no_grad():
        bn = tuned.model.get_submodule("_bn1")
        assert isinstance(bn, nn.BatchNorm2d)
        bn.bias.add_(0.5)  # stands in for fine-tuning
    save_checkpoint(tuned, tmp_path / "ft.pt")
    again = load_backbone("efficientnet_lite0", tmp_path / "ft.pt")
    assert again.preprocessing == lite0.preprocessing
    assert again.weights_sha256 == file_sha256(tmp_path / "ft.pt") != lite0.weights_sha256
    frames = random_frames(2, 96)
    expected = tuned.extract(frames, precision="fp32")[0]
    np.testing.assert_array_equal(again.extract(frames, precision="fp32")[0], expected)
    assert not np.allclose(lite0.extract(frames, precision="fp32")[0], expected)
    with pytest.raises(ValueError, match="modality"):
        load_backbone("efficientnet_lite0", tmp_path / "ft.pt", modality="flow")
    with pytest.raises(ValueError, match="backbone"):
        load_backbone("resnet18", tmp_path / "ft.pt")


def test_flow_cross_modality_init(lite0, tmp_path: Path) -> None:
    flow = load_backbone("efficientnet_lite0", "imagenet", modality="flow")
    rgb_w = stem_weight(lite0.model)
    flow_w = stem_weight(flow.model)
    assert flow_w.shape == (32, 2, 3, 3)
    torch.testing.assert_close(flow_w[:, 0], rgb_w.mean(dim=1))
    torch.testing.assert_close(flow_w[:, 1], rgb_w.mean(dim=1))
    assert flow.preprocessing.channels == 2
    pooled, _ = flow.extract(random_frames(2, 64, channels=2), precision="fp32")
    assert pooled.shape == (2, 1280) and np.isfinite(pooled).all()
    save_checkpoint(flow, tmp_path / "flow.pt")
    again = load_backbone("efficientnet_lite0", tmp_path / "flow.pt", modality="flow")
    torch.testing.assert_close(stem_weight(again.model), flow_w)
    with pytest.raises(ValueError, match=r"\(B, H, W, 2\)"):
        flow.extract(random_frames(1, 64, channels=3))


def test_bf16_agrees_with_fp32_on_real_frames(lite0) -> None:
    frames = np.concatenate([photo("chelsea", 160), photo("coffee", 160), photo("astronaut", 160)])
    fp32, _ = lite0.extract(frames, precision="fp32")
    bf16, _ = lite0.extract(frames, precision="bf16")
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() > 0.99


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        load_backbone("vgg16", "none")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(BACKBONES["resnet50"])
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_backbone("resnet18", "/nonexistent/nope.pth")
