"""Shared memory through which the decoding workers hand their frames to the extraction process.

A DataLoader item reaches the main process pickled through a pipe: for a 224 px video (8 frames,
1.2 MB) that costs the main process more than a millisecond of CPU, which caps one GPU process at
several hundred videos/s however many workers decode. A :class:`FrameRing` is one anonymous shared
mapping made before the workers fork. The worker that decodes item ``i`` waits until item ``i - slots``
has been taken, writes the item's frames into slot ``i % slots`` and sends only their shapes; the main
process copies them out (one memcpy) and counts the item as taken. The count is a lock-guarded shared
value, so the slot's reads are ordered before its next write on every CPU, not only on x86.

Items are taken in index order (the DataLoader yields them so), and a worker only ever waits for an
item below its own: with more slots than items the DataLoader has in flight nobody waits, and a worker
that still waits longer than ``wait_s`` sends its frames through the pipe instead, so a ring that is
too small costs speed, never a hang. Linux only (the mapping must be inherited through ``fork``).
"""

from __future__ import annotations

import mmap
import multiprocessing
import sys
import time
from dataclasses import replace
from math import prod

import numpy as np

from fsar.extract.source import SourceConfig, VideoItem

#: (modality, shape) of each array a slot holds, in slot order
Layout = tuple[tuple[str, tuple[int, ...]], ...]


def available() -> bool:
    """Whether workers can share a ring: forked processes inherit anonymous shared mappings on Linux."""
    return sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


class FrameRing:
    """``slots`` slots of ``slot_bytes`` uint8 each, shared with the worker processes forked after it.

    :meth:`put` runs in a worker, :meth:`take` in the main process.
    """

    def __init__(self, slots: int, slot_bytes: int, *, wait_s: float = 1.0) -> None:
        if slots < 1 or slot_bytes < 1:
            raise ValueError(f"a ring needs at least one slot of one byte, got {slots} x {slot_bytes}")
        self.slots, self.slot_bytes, self.wait_s = slots, slot_bytes, wait_s
        self._memory = mmap.mmap(-1, slots * slot_bytes)  # MAP_SHARED | MAP_ANONYMOUS
        self._taken = multiprocessing.get_context("fork").Value("q", 0)  # items taken so far, in order

    def put(self, index: int, item: VideoItem) -> tuple[VideoItem, Layout | None]:
        """In a worker: move item ``index``'s frames into its slot. Returns the item without them and where
        they lie, or the item unchanged and None when they do not fit or the slot stays busy."""
        arrays = list(item.inputs.items())
        if not arrays or sum(a.nbytes for _, a in arrays) > self.slot_bytes or not self._wait_free(index):
            return item, None
        offset = (index % self.slots) * self.slot_bytes
        for _, array in arrays:
            view = np.frombuffer(self._memory, np.uint8, array.size, offset).reshape(array.shape)
            np.copyto(view, array, casting="no")
            offset += array.nbytes
        return replace(item, inputs={}), tuple((m, a.shape) for m, a in arrays)

    def take(self, index: int, item: VideoItem, layout: Layout | None) -> VideoItem:
        """In the main process: item ``index`` with its frames copied out of the slot, which is then free.
        Call it for every index in order (also for items :meth:`put` returned unchanged)."""
        if layout is not None:
            offset = (index % self.slots) * self.slot_bytes
            inputs = {}
            for modality, shape in layout:
                size = prod(shape)
                inputs[modality] = np.frombuffer(self._memory, np.uint8, size, offset).reshape(shape).copy()
                offset += size
            item = replace(item, inputs=inputs)
        with self._taken.get_lock():
            if self._taken.value != index:
                raise RuntimeError(f"ring items must be taken in order: expected {self._taken.value}, got {index}")
            self._taken.value = index + 1
        return item

    def _wait_free(self, index: int) -> bool:
        """Whether the item that last used ``index``'s slot has been taken (waiting up to ``wait_s``)."""
        deadline = time.monotonic() + self.wait_s
        while True:
            with self._taken.get_lock():
                if self._taken.value > index - self.slots:
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0005)


def slot_bytes(config: SourceConfig) -> int:
    """Bytes of one video's inputs: rgb [V, T, S, S, 3] and flow [V, T, S, S, 2] uint8."""
    channels = {"rgb": 3, "flow": 2}
    return sum(config.views * config.frames * config.crop.crop**2 * channels[m] for m in config.modalities)
