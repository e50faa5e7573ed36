"""Scoring an episode list with a learned head that encodes each distinct video once.

A head that splits its forward (:attr:`fsar.matchers.head.Head.encodes_videos`) runs its per-video part,
:meth:`~fsar.matchers.head.Head.encode_videos`, on every video the episodes use, ``encode_batch`` videos
at a time; each chunk of episodes then gathers its encoded videos by row and runs the per-episode part,
:meth:`~fsar.matchers.head.Head.match`. A video that appears in a hundred episodes is encoded once instead
of a hundred times; the scores equal the per-episode path's (``head(query, support, ...)``) to float
rounding.

The encoded videos stay on the scoring device unless, on a GPU, they would take more than half of its free
memory; they then stay in host memory and each chunk's rows are moved over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from fsar.matchers.head import Head, VideoCodes
from fsar.runner.features import Features
from fsar.runner.scoring import ByEncodedVideos

__all__ = ["EncodedVideos", "encode_rows", "encoded_scorer"]

# What the per-episode part takes besides the encoded videos, from a chunk's class names [E, way] (or None).
ExtraFn = Callable[[NDArray[np.str_] | None], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class EncodedVideos:
    """Encoded videos of an episode list: ``codes[name][where[row]]`` is the code of loaded row ``row``."""

    codes: VideoCodes  # name -> [N_used, *shape]
    where: NDArray[np.int64]  # loaded row -> row of ``codes`` (-1: a video no episode uses)

    def gather(self, rows: NDArray[np.integer], device: torch.device) -> VideoCodes:
        """Codes of loaded rows [E, K] -> {name: [E, K, *shape]} on ``device``."""
        index = self.where[np.asarray(rows)]
        if (index < 0).any():
            raise ValueError("an episode uses a video that was not encoded")
        flat = torch.from_numpy(np.ascontiguousarray(index.ravel(), dtype=np.int64))
        out = {}
        for name, code in self.codes.items():
            # Advanced indexing, not index_select: with threads on busy cores, index_select's parallel copy of
            # large rows ran 10-30x slower, advanced indexing stayed fast either way.
            picked = code[flat.to(code.device)]
            out[name] = picked.to(device, non_blocking=True).view(*index.shape, *code.shape[1:])
        return out


def _store_device(device: torch.device, total_bytes: int) -> torch.device:
    """Where the codes are kept: the scoring device, or host memory when a GPU has too little free room."""
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    return device if total_bytes <= free // 2 else torch.device("cpu")


def encode_rows(head: Head, features: Features, rows: NDArray[np.int64], device: torch.device) -> EncodedVideos:
    """``head.encode_videos`` of loaded ``rows``, ``head.encode_batch`` videos per call (inference mode).

    Run inside the caller's autocast/inference context. Output buffers are allocated after the first batch
    (its shapes and dtypes give them), so memory holds the codes plus one batch's activations.
    """
    n_loaded = len(next(iter(features.values())))
    where = np.full(n_loaded, -1, dtype=np.int64)
    where[rows] = np.arange(len(rows))
    codes: VideoCodes = {}
    step = max(1, head.encode_batch)
    for start in range(0, len(rows), step):
        index = rows[start:start + step]
        videos = {m: torch.from_numpy(np.ascontiguousarray(x[index])).to(device)[None] for m, x in features.items()}
        out = {name: code[0] for name, code in head.encode_videos(videos).items()}
        if not codes:
            per_video = sum(c[0].numel() * c.element_size() for c in out.values())
            store = _store_device(device, per_video * len(rows))
            codes = {name: torch.empty((len(rows), *c.shape[1:]), dtype=c.dtype, device=store)
                     for name, c in out.items()}
        for name, code in out.items():
            codes[name][start:start + len(index)] = code
    return EncodedVideos(codes, where)


def _autocast(device: torch.device) -> torch.autocast:
    """fp16 on CUDA, as in training and on the per-episode path; none on the CPU."""
    return torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda")


def encoded_scorer(head: Head, device: torch.device, name: str, extra: ExtraFn) -> ByEncodedVideos:
    """A :class:`~fsar.runner.scoring.ByEncodedVideos` scorer of ``head`` (which must split its forward).

    ``extra``: the per-episode part's other inputs from a chunk's class names (``class_text``). Episodes are
    matched ``head.eval_pairs // (Q * S)`` at a time, as on the per-episode path.
    """
    if not head.encodes_videos:
        raise ValueError(f"{name}: {type(head).__name__} does not split its forward per video")
    head = head.to(device).eval()

    def encode(features: Features, rows: NDArray[np.int64]) -> EncodedVideos:
        with torch.inference_mode(), _autocast(device):
            return encode_rows(head, features, rows, device)

    def score(table: EncodedVideos, query_rows: NDArray[np.integer], support_rows: NDArray[np.integer],
              labels: NDArray[np.int64], way: int, class_names: NDArray[np.str_] | None
              ) -> dict[str, NDArray[np.float32]]:
        e, q, s = query_rows.shape[0], query_rows.shape[1], support_rows.shape[1]
        step = max(1, head.eval_pairs // (q * s))
        kwargs = extra(class_names)
        parts = []
        with torch.inference_mode(), _autocast(device):
            for i in range(0, e, step):
                lab = torch.from_numpy(np.ascontiguousarray(labels[i:i + step])).to(device)
                more = {k: v[i:i + step] for k, v in kwargs.items()}
                logits = head.match(table.gather(query_rows[i:i + step], device),
                                    table.gather(support_rows[i:i + step], device), lab, way, **more)
                parts.append(logits.float().cpu().numpy())
        return {name: np.concatenate(parts)}

    return ByEncodedVideos(encode, score)
