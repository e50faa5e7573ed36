"""Features of the videos an episode list uses, read once from a feature cache, and gathered per episode.

Features of every video the list uses are read once (float16 in the store, float32 here); episodes are
then gathered chunk by chunk into reused buffers, so that memory does not grow with their number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from fsar.cache.store import FeatureCache
from fsar.episodes import EpisodeError, EpisodeList, check_episodes_fit

Features = dict[str, NDArray[np.float32]]


def parse_modality(modality: str) -> tuple[str, ...]:
    parts = tuple(modality.split("+"))
    if not parts or any(p not in ("rgb", "flow") for p in parts) or len(set(parts)) != len(parts):
        raise EpisodeError(f"--modality must be rgb, flow or rgb+flow, got {modality!r}")
    return parts



@dataclass(frozen=True)
class LoadedFeatures:
    features: Features  # modality -> [len(episodes.ids), T, D] or [.., T, P, D]


def load_features(cache: FeatureCache, episodes: EpisodeList, modalities: tuple[str, ...],
                   patches: bool, center: bool = False) -> LoadedFeatures:
    check_episodes_fit(episodes, cache.ids)
    rows = cache.rows_for(episodes.ids)
    feats: Features = {}
    for m in modalities:
        cache.require(m, patches=patches)
        stored = cache.patches(m, rows) if patches else cache.frames(m, rows)
        if center and m == "rgb":  # flow features describe motion already: nothing static to remove
            stored = center_in_time(stored)
        # float16 -> float32 once per video here, not once per episode in every matcher.
        feats[m] = stored.astype(np.float32)
    return LoadedFeatures(feats)


# Features of one (cache, episode list) pair keyed by (modalities, patches, centred): the matchers of one
# plan read the same arrays, so each combination is read from the store once.
FeatureMemo = dict[tuple[tuple[str, ...], bool, bool], LoadedFeatures]


def load_once(memo: FeatureMemo | None, cache: FeatureCache, episodes: EpisodeList, modalities: tuple[str, ...],
               patches: bool, center: bool) -> LoadedFeatures:
    if memo is None:
        return load_features(cache, episodes, modalities, patches, center)
    key = (modalities, patches, center)
    if key not in memo:
        memo[key] = load_features(cache, episodes, modalities, patches, center)
    return memo[key]



def center_in_time(features: NDArray[np.floating]) -> NDArray[np.floating]:
    """Subtract each video's mean over time: [N, T, ...] -> [N, T, ...], in the features' own dtype.

    What stays constant through a video (its appearance: background, actor, lighting) cancels and
    what changes (the motion) remains. Mean pooling of a centred video is zero, so ``proto`` is
    undefined (at chance) on centred features by construction.
    """
    centred = features.astype(np.float32) - features.astype(np.float32).mean(axis=1, keepdims=True)
    return centred.astype(features.dtype)


class Gatherer:
    """``features[index]`` into buffers kept across chunks.

    Episode inputs are copies of the loaded features (the matcher contract takes per-episode arrays).
    A fresh buffer per chunk costs more in page faults than the copy itself, so torch's ``index_select``
    fills buffers reused across chunks (about 6x faster than numpy fancy indexing into new arrays).
    """

    def __init__(self, loaded: LoadedFeatures) -> None:
        self.features = {m: torch.from_numpy(f) for m, f in loaded.features.items()}
        self.buffers: dict[tuple[str, str], torch.Tensor] = {}

    def gather(self, modality: str, role: str, index: NDArray[np.integer]) -> NDArray[np.float32]:
        """[N, ...] features by [E, K] index -> [E, K, ...]; valid until the next call for this role."""
        source = self.features[modality]
        rows = torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64).ravel())
        key = (modality, role)
        if key not in self.buffers or len(self.buffers[key]) < len(rows):
            self.buffers[key] = torch.empty((len(rows), *source.shape[1:]), dtype=source.dtype)
        out = self.buffers[key][: len(rows)]
        torch.index_select(source, 0, rows, out=out)
        return out.numpy().reshape(*index.shape, *source.shape[1:])

    def placeholder(self, modality: str, index: NDArray[np.integer]) -> NDArray[np.float32]:
        """An array shaped like ``gather(modality, _, index)`` that holds no memory: NaN everywhere, read-only."""
        shape = (*index.shape, *self.features[modality].shape[1:])
        nan = np.full(1, np.nan, dtype=np.float32)
        return np.lib.stride_tricks.as_strided(nan, shape, (0,) * len(shape), writeable=False)

    def episode_inputs(self, chunk: EpisodeList, placeholders: bool = False
                       ) -> tuple[Features, Features, NDArray[np.int64]]:
        """Query [E, way*query, ...] and support [E, way*shot, ...] features per modality, and support labels;
        ``placeholders``: :meth:`placeholder` arrays instead of the features."""
        e, way, shot = chunk.support_idx.shape
        take = (lambda m, _, i: self.placeholder(m, i)) if placeholders else self.gather
        query = {m: take(m, "query", chunk.query_idx.reshape(e, -1)) for m in self.features}
        support = {m: take(m, "support", chunk.support_idx.reshape(e, -1)) for m in self.features}
        labels = np.broadcast_to(np.repeat(np.arange(way), shot), (e, way * shot)).astype(np.int64)
        return query, support, labels

