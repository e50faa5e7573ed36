from __future__ import annotations

import numpy as np
import pytest
import torch

from fsar.extract import ring as ring_module
from fsar.extract.ring import FrameRing, Layout, slot_bytes
from fsar.extract.source import SourceConfig, VideoItem
from fsar.extract.transforms import CropConfig

pytestmark = pytest.mark.skipif(not ring_module.available(), reason="the ring needs fork (Linux)")

SLOT = 2 * 3 * 8 * 8 * 3 + 2 * 3 * 8 * 8 * 2  # two views of three 8x8 frames, rgb and flow


def made_item(index: int) -> VideoItem:
    """Item ``index`` of the tests' stream: every 7th failed (no frames), every 11th too big for a slot."""
    rng = np.random.default_rng(index)
    if index % 7 == 3:
        return VideoItem(index, f"v{index}", 2, "unreadable", 0, {})
    views = 5 if index % 11 == 5 else 2
    inputs = {"rgb": rng.integers(0, 256, (views, 3, 8, 8, 3), np.uint8)}
    if index % 2:
        inputs["flow"] = rng.integers(0, 256, (views, 3, 8, 8, 2), np.uint8)
    return VideoItem(index, f"v{index}", 0, "", 10 + index, inputs)


def fits(index: int) -> bool:
    """Whether item ``index``'s frames go through a ring slot (they exist and are not too big)."""
    return index % 7 != 3 and index % 11 != 5


def assert_same(got: VideoItem, expected: VideoItem) -> None:
    assert (got.row, got.video_id, got.status, got.error, got.n_frames) == (
        expected.row, expected.video_id, expected.status, expected.error, expected.n_frames)
    assert sorted(got.inputs) == sorted(expected.inputs)
    for modality, array in expected.inputs.items():
        np.testing.assert_array_equal(got.inputs[modality], array, err_msg=f"{expected.video_id} {modality}")


class _Stream(torch.utils.data.Dataset[tuple[VideoItem, Layout | None]]):
    def __init__(self, n: int, ring: FrameRing) -> None:
        self.n, self.ring = n, ring

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[VideoItem, Layout | None]:
        return self.ring.put(i, made_item(i))


def test_a_slot_round_trip_returns_the_frames_and_frees_the_slot() -> None:
    ring = FrameRing(2, SLOT)
    for index in range(6):  # wraps around the two slots three times
        item = made_item(index)
        sent, layout = ring.put(index, item)
        if not fits(index):
            assert sent is item and layout is None
        else:
            assert sent.inputs == {} and layout == tuple((m, a.shape) for m, a in item.inputs.items())
        assert_same(ring.take(index, sent, layout), item)


def test_frames_that_do_not_fit_or_find_no_free_slot_travel_with_the_item() -> None:
    ring = FrameRing(1, SLOT, wait_s=0.01)
    big = made_item(5)  # five views: more than a slot holds
    sent, layout = ring.put(0, big)
    assert sent is big and layout is None
    ring.take(0, big, None)
    first, layout = ring.put(1, made_item(1))
    assert layout is not None
    late, none = ring.put(2, made_item(2))  # item 1 is not taken yet: its slot stays busy past wait_s
    assert none is None
    assert_same(late, made_item(2))
    assert_same(ring.take(1, first, layout), made_item(1))  # the busy slot was not overwritten
    assert_same(ring.take(2, late, none), made_item(2))


def test_items_must_be_taken_in_order() -> None:
    ring = FrameRing(4, SLOT)
    sent, layout = ring.put(1, made_item(1))
    with pytest.raises(RuntimeError, match="in order"):
        ring.take(1, sent, layout)


def test_forked_workers_hand_over_every_item_through_a_small_ring() -> None:
    # 2 workers keep 6 items in flight but the ring has 2 slots: workers wait for them across processes
    ring = FrameRing(2, SLOT, wait_s=60.0)
    moved = []
    loader = torch.utils.data.DataLoader(_Stream(40, ring), batch_size=None, num_workers=2, prefetch_factor=3,
                                         multiprocessing_context="fork")
    for index, (item, layout) in enumerate(loader):
        moved.append(layout is not None)
        assert_same(ring.take(index, item, layout), made_item(index))
    assert moved == [fits(i) for i in range(40)]


def test_a_slot_holds_one_video_of_every_view_and_modality() -> None:
    config = SourceConfig(frames=8, views=3, crop=CropConfig(crop=112), modalities=("rgb", "flow"))
    assert slot_bytes(config) == 3 * 8 * 112 * 112 * (3 + 2)
    assert slot_bytes(SourceConfig()) == 8 * 224 * 224 * 3
