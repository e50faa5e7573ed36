"""Hand-made records for the report tests."""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import NDArray

from fsar.report import Record, make_record


def record(
    matcher: str,
    correct: NDArray[np.bool_] | None = None,
    *,
    dataset: str = "ssv2",
    way: int = 5,
    shot: int = 1,
    query: int = 1,
    accuracy: float | None = None,
    ci95: float | None = None,
    created: str = "2024-01-01T00:00:00+00:00",
    episodes_sha256: str = "e" * 64,
) -> Record:
    """A record with fixed metadata; ``accuracy``/``ci95`` override the computed values."""
    if correct is None:
        correct = np.random.default_rng(0).random((20, way * query)) < 0.5
    rec = make_record(
        matcher=matcher, params={"lam": 0.1}, dataset=dataset, split="test", way=way, shot=shot,
        query=query, protocol="custom", cache_path="caches/x.zarr", cache_sha256="c" * 64,
        episodes_path="episodes/x.npz", episodes_sha256=episodes_sha256, correct=correct, seconds=2.0,
    )
    changes: dict[str, object] = {"created": created}
    if accuracy is not None:
        changes["accuracy"] = accuracy
    if ci95 is not None:
        changes["ci95"] = ci95
    return dataclasses.replace(rec, **changes)  # type: ignore[arg-type]
