"""Optical flow: known shifts per method, the uint8 encoding, pre-extracted jpg layouts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from fsar.extract.decode import VideoReadError
from fsar.extract.flow import (
    FlowMethodUnavailable,
    compute_flow,
    flow_images,
    flow_to_uint8,
    locate_flow,
    read_flow_files,
    uint8_to_flow,
    write_flow_folder,
)

SHIFTS = [(3, -2), (-1, 4), (0, 0)]


def texture(h: int = 128, w: int = 160, seed: int = 0) -> NDArray[np.uint8]:
    """Smooth random texture: blurred noise, contrast-stretched, as RGB."""
    noise = np.random.default_rng(seed).random((h, w)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    grey = np.rint((smooth - smooth.min()) * 255 / (smooth.max() - smooth.min())).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def shifted(image: NDArray[np.uint8], dx: int, dy: int) -> NDArray[np.uint8]:
    """next[y + dy, x + dx] = image[y, x]: a flow of (dx, dy) everywhere (wrapping at the borders)."""
    return np.roll(image, (dy, dx), axis=(0, 1))


def has_tvl1() -> bool:
    return hasattr(cv2, "optflow")


@pytest.mark.parametrize("method", ["farneback", "dis", "tvl1"])
@pytest.mark.parametrize(("dx", "dy"), SHIFTS)
def test_known_shift(method: str, dx: int, dy: int) -> None:
    image = texture()
    if method == "tvl1" and not has_tvl1():
        with pytest.raises(FlowMethodUnavailable, match="opencv-contrib"):
            compute_flow(image, shifted(image, dx, dy), "tvl1")
        return
    flow = compute_flow(image, shifted(image, dx, dy), method)  # type: ignore[arg-type]
    assert flow.shape == (128, 160, 2) and flow.dtype == np.float32
    interior = flow[16:-16, 16:-16].reshape(-1, 2)
    np.testing.assert_allclose(interior.mean(axis=0), [dx, dy], atol=0.25)
    assert np.median(np.abs(interior - [dx, dy])) < 0.25


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown flow method"):
        compute_flow(texture(), texture(), "lucas")  # type: ignore[arg-type]


def test_encoding_clips_and_maps_linearly() -> None:
    flow = np.array([[-35.0, -20.0], [0.0, 10.0], [20.0, 99.0]], dtype=np.float32)
    np.testing.assert_array_equal(flow_to_uint8(flow), [[0, 0], [128, 191], [255, 255]])
    values = np.linspace(-20, 20, 101, dtype=np.float32)
    assert np.abs(uint8_to_flow(flow_to_uint8(values)) - values).max() <= 20 / 255 + 1e-4  # half a quantisation step
    np.testing.assert_array_equal(flow_to_uint8(np.array([5.0]), bound=10), [191])


def test_flow_images_of_pairs() -> None:
    image = texture(96, 128)
    pairs = np.stack([np.stack([image, shifted(image, 2, 1)])] * 2)
    out = flow_images(pairs, "dis", resize_short=None)
    assert out.shape == (2, 96, 128, 2) and out.dtype == np.uint8
    centre = uint8_to_flow(out[0, 16:-16, 16:-16]).reshape(-1, 2).mean(axis=0)
    np.testing.assert_allclose(centre, [2, 1], atol=0.3)
    assert flow_images(pairs, "dis", resize_short=48).shape == (2, 48, 64, 2)
    with pytest.raises(ValueError, match="pairs"):
        flow_images(pairs[:, 0])


def smooth_flow_images(k: int) -> NDArray[np.uint8]:
    yy, xx = np.mgrid[0:48, 0:64]
    return np.stack([np.stack([(xx * 3 + 20 * t) % 256, (yy * 4 + 10 * t) % 200], axis=-1)
                     for t in range(k)]).astype(np.uint8)


def write_plain(directory: Path, images: NDArray[np.uint8], axis: int, name: str) -> None:
    directory.mkdir(parents=True)
    for k, image in enumerate(images, start=1):
        cv2.imwrite(str(directory / name.format(k)), image[..., axis], [cv2.IMWRITE_JPEG_QUALITY, 100])


@pytest.mark.parametrize("layout", ["tsn", "nested", "flow_xy_root", "uv_root"])
def test_jpg_layouts_round_trip(tmp_path: Path, layout: str) -> None:
    images = smooth_flow_images(12)
    video = "class_a/vid_001"
    if layout == "tsn":
        write_flow_folder(tmp_path / video, images, quality=100)
    elif layout == "nested":
        write_plain(tmp_path / video / "flow_x", images, 0, "{:05d}.jpg")
        write_plain(tmp_path / video / "flow_y", images, 1, "{:05d}.jpg")
    else:
        x_name, y_name = ("flow_x", "flow_y") if layout == "flow_xy_root" else ("u", "v")
        write_plain(tmp_path / x_name / video, images, 0, "frame{}.jpg")  # unpadded: natural order
        write_plain(tmp_path / y_name / video, images, 1, "frame{}.jpg")
    files = locate_flow(tmp_path, video)
    assert len(files) == 12
    got = read_flow_files(files, [0, 9, 11])
    assert got.shape == (3, 48, 64, 2)
    assert np.abs(got.astype(int) - images[[0, 9, 11]]).mean() < 2.0  # jpeg at quality 100


def test_flow_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="no pre-extracted flow"):
        locate_flow(tmp_path, "missing")
    write_flow_folder(tmp_path / "v", smooth_flow_images(3))
    (tmp_path / "v" / "flow_y_00003.jpg").unlink()
    with pytest.raises(VideoReadError, match="3 flow_x images but 2 flow_y"):
        locate_flow(tmp_path, "v")
    (tmp_path / "v" / "flow_x_00003.jpg").unlink()
    with pytest.raises(VideoReadError, match="flow 5 requested"):
        read_flow_files(locate_flow(tmp_path, "v"), [5])


def test_flow_images_feed_the_flow_backbone() -> None:
    from fsar.extract.backbone import load_backbone
    from fsar.extract.transforms import CropConfig, preprocess_view

    image = texture(72, 96)
    pairs = np.stack([np.stack([image, shifted(image, 1, 0)])] * 3)
    images = flow_images(pairs, "farneback", resize_short=64)
    config = CropConfig(resize_short=64, crop=48)
    backbone = load_backbone("efficientnet_lite0", "none", modality="flow")
    for view in (0, 1):
        crops = preprocess_view(images, view=view, seed=0, video_id="v", config=config, is_flow=True)
        assert crops.shape == (3, 48, 48, 2)
        pooled, patches = backbone.extract(crops, patches=2, precision="fp32")
        assert pooled.shape == (3, 1280) and patches is not None and patches.shape == (3, 4, 1280)
