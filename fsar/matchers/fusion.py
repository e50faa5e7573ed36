"""Fusion of several named scores of one episode batch (streams, or a matcher's components).

Each component is z-normalised per episode (over its Q x way scores) before the weighted sum: without
it the sum is dominated by whichever score has the larger spread (an OTAM distance sums about 2T frame
costs, Kuhn-Munkres T cosines).

Components are named ``<modality>-<part>`` (``rgb-otam``, ``flow-km``). Weights chosen on validation episodes
may drop a component (weight 0): :func:`dropped_label` names what was dropped (``km 0``, ``flow 0``) for the
run's label, so a row is never called by a method's name while it leaves out a part of that method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
PAPER = "paper"  # ``--weights paper``: every component weighs 1 after z-normalisation, the method as published

_EPS = 1e-6


def episode_zscore(scores: NDArray[np.floating]) -> F32:
    """Standardise each episode's scores over its Q x way entries. [E, Q, W] -> [E, Q, W] float32.

    An episode whose scores are all equal maps to zeros.
    """
    x = np.asarray(scores, dtype=np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    return np.where(std > _EPS, (x - mean) / np.maximum(std, _EPS), 0.0).astype(np.float32)


def fuse(components: Mapping[str, NDArray[np.floating]], weights: Mapping[str, float] | None = None) -> F32:
    """Weighted sum of per-episode z-normalised component scores, each [E, Q, W] -> [E, Q, W]."""
    if not components:
        raise ValueError("no component scores to fuse")
    if weights is None:
        weights = dict.fromkeys(components, 1.0)
    unknown = sorted(set(weights) - set(components))
    if unknown:
        raise ValueError(f"weights for unknown components {unknown}; known: {sorted(components)}")
    if not any(w != 0 for w in weights.values()):
        raise ValueError("at least one fusion weight must be non-zero")
    first = next(iter(components.values()))
    fused = np.zeros(np.shape(first), dtype=np.float32)
    for name, weight in weights.items():
        if weight:
            fused += np.float32(weight) * episode_zscore(components[name])
    return fused


def dropped_label(weights: Mapping[str, float] | None) -> str:
    """What weights of 0 leave out, compactly: ``km 0`` (every stream's km), ``flow 0`` (every part of the flow
    stream), else the components themselves (``rgb-km 0``); "" when nothing is dropped."""
    if not weights:
        return ""
    zero = {n for n, w in weights.items() if w == 0}
    if not zero:
        return ""
    out: list[str] = []
    names = sorted(weights)
    modalities = _split(names, 0)
    groups = list(_split(names, 1).items()) + (list(modalities.items()) if len(modalities) > 1 else [])
    for label, members in groups:
        if set(members) <= zero:
            out.append(f"{label} 0")
            zero -= set(members)
    out += [f"{n} 0" for n in sorted(zero)]
    return ", ".join(out)


def _split(names: Sequence[str], side: int) -> dict[str, list[str]]:
    """Component names grouped by their modality (side 0) or part (side 1); names without a '-' are their own."""
    groups: dict[str, list[str]] = {}
    for name in names:
        parts = name.split("-", 1)
        groups.setdefault(parts[side] if len(parts) == 2 else name, []).append(name)
    return groups
