"""Scoring episode lists chunk by chunk, per-query correctness, and fusion weights chosen on validation episodes."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from fsar.episodes import EpisodeList, iter_chunks
from fsar.matchers.fusion import fuse
from fsar.matchers.similarity import VideoFrames, indexed_frames
from fsar.runner.features import Features, Gatherer, LoadedFeatures

ComponentFn = Callable[[Features, Features, NDArray[np.int64], int], dict[str, NDArray[np.float32]]]


# Per chunk of episodes: at most this many (query, support) pairs and this many gathered feature values,
# which bounds the similarity tensors and the per-episode feature copies to tens of MB.
PAIRS_PER_CHUNK = 60_000
VALUES_PER_CHUNK = 16_000_000
WEIGHT_GRID = (0.0, 0.5, 1.0)


@dataclass(frozen=True)
class ByClassNames:
    """A scorer that also reads the class names of each episode, [E, way] in label order (a learned head
    whose matching uses them); :func:`score_all` passes them to it and to no other scorer."""

    score: Callable[[Features, Features, NDArray[np.int64], int, NDArray[np.str_]], dict[str, NDArray[np.float32]]]


@dataclass(frozen=True)
class ByEncodedVideos:
    """A scorer that encodes each video once (a learned head that splits its forward per video,
    :mod:`fsar.runner.encoded`): :func:`score_all` calls ``encode(features, rows)`` once with the loaded
    rows the episodes use, then ``score(table, query_rows [E, Q], support_rows [E, S], labels, way,
    class_names [E, way])`` per chunk of episodes, with ``table`` what ``encode`` returned."""

    encode: Callable[[Features, NDArray[np.int64]], Any]
    score: Callable[[Any, NDArray[np.integer], NDArray[np.integer], NDArray[np.int64], int, NDArray[np.str_]],
                    dict[str, NDArray[np.float32]]]


def score_all(
    fn: ComponentFn | ByClassNames | ByEncodedVideos, loaded: LoadedFeatures, episodes: EpisodeList, progress: bool,
    desc: str, *, frame_cosines_only: bool = False,
) -> dict[str, NDArray[np.float32]]:
    """Component scores of every episode, [E, way*query, way] each.

    ``frame_cosines_only``: the matcher declares (at registration) that it reads the features only through
    the frame cosines of each pair; it then gets placeholder features (no per-episode copies) and the
    cosines are gathered from a table of the list's videos.
    """
    if isinstance(fn, ByEncodedVideos):
        return _score_encoded(fn, loaded, episodes, progress, desc)
    per_episode = episodes.way * episodes.query * episodes.way * episodes.shot
    video_values = max(f[0].size for f in loaded.features.values())
    values = episodes.way * (episodes.query + episodes.shot) * video_values
    scorer = _ChunkScorer(fn, loaded, episodes.n_episodes * per_episode, frame_cosines_only)
    out = _Scores(episodes)
    bar = tqdm(total=episodes.n_episodes, desc=desc, unit="ep", disable=not progress, leave=False)
    start = 0
    while start < episodes.n_episodes:
        # Gathered features bound the chunk, unless the matcher has been seen not to read them.
        bound = PAIRS_PER_CHUNK // per_episode if not scorer.reads else VALUES_PER_CHUNK // values
        stop = min(episodes.n_episodes, start + max(1, min(PAIRS_PER_CHUNK // per_episode, bound)))
        chunk = episodes.slice(start, stop)
        out.put(slice(start, stop), scorer(chunk))
        bar.update(chunk.n_episodes)
        start = stop
    bar.close()
    return out.scores


def video_frames(loaded: LoadedFeatures, pairs: int) -> dict[str, VideoFrames]:
    """Per modality, the loaded frame features ([N, T, D]; not patches) normalised once for the whole list."""
    return {m: VideoFrames(f, pairs) for m, f in loaded.features.items() if f.ndim == 3}


class _ChunkScorer:
    """Scores chunks of episodes; for a parameter-free matcher, through the frame cosines of :class:`VideoFrames`.

    The gathered inputs are registered in :func:`indexed_frames`, so that matchers comparing frames by cosine
    gather precomputed blocks. A matcher registered with ``frame_cosines_only`` never reads the feature values,
    and copying every episode's features would cost more than all of its scoring: it gets placeholders (NaN,
    no memory) instead. Should such a matcher read them after all, its scores come out NaN, and that is
    refused rather than scored.
    """

    def __init__(self, fn: ComponentFn | ByClassNames, loaded: LoadedFeatures, pairs: int,
                 frame_cosines_only: bool) -> None:
        self.fn, self.gatherer = fn, Gatherer(loaded)
        # Learned heads compute their own similarities: only parameter-free matchers read the frame index.
        self.frames = {} if isinstance(fn, ByClassNames) else video_frames(loaded, pairs)
        self.reads = not (frame_cosines_only and self.frames)  # does fn get the feature values?

    def __call__(self, chunk: EpisodeList) -> dict[str, NDArray[np.float32]]:
        if self.reads:
            return self._score(chunk, *self.gatherer.episode_inputs(chunk))
        with np.errstate(all="ignore"):
            scored = self._score(chunk, *self.gatherer.episode_inputs(chunk, placeholders=True))
        if not all(np.isfinite(v).all() for v in scored.values()):
            raise RuntimeError("a matcher registered with frame_cosines_only read the feature values (its scores "
                               "are NaN on placeholder features): drop frame_cosines_only from its registration")
        return scored

    def _score(self, chunk: EpisodeList, query: Features, support: Features, labels: NDArray[np.int64]
               ) -> dict[str, NDArray[np.float32]]:
        e = chunk.n_episodes
        with indexed_frames() as index:
            for m, videos in self.frames.items():
                index.add(query[m], videos, chunk.query_idx.reshape(e, -1))
                index.add(support[m], videos, chunk.support_idx.reshape(e, -1))
            if isinstance(self.fn, ByClassNames):
                return self.fn.score(query, support, labels, chunk.way, chunk.class_names)
            return self.fn(query, support, labels, chunk.way)


def _score_encoded(fn: ByEncodedVideos, loaded: LoadedFeatures, episodes: EpisodeList, progress: bool, desc: str
                   ) -> dict[str, NDArray[np.float32]]:
    """:func:`score_all` for a scorer that encodes every video the episodes use once, then reads rows."""
    table = fn.encode(loaded.features, np.unique(np.concatenate([episodes.query_idx.ravel(),
                                                                 episodes.support_idx.ravel()])).astype(np.int64))
    chunk_size = max(1, PAIRS_PER_CHUNK // (episodes.way * episodes.query * episodes.way * episodes.shot))
    out = _Scores(episodes)
    bar = tqdm(total=episodes.n_episodes, desc=desc, unit="ep", disable=not progress, leave=False)
    for start, chunk in iter_chunks(episodes, chunk_size):
        e, way, shot = chunk.support_idx.shape
        labels = np.broadcast_to(np.repeat(np.arange(way), shot), (e, way * shot)).astype(np.int64)
        out.put(slice(start, start + e), fn.score(table, chunk.query_idx.reshape(e, -1),
                                                  chunk.support_idx.reshape(e, -1), labels, episodes.way,
                                                  chunk.class_names))
        bar.update(chunk.n_episodes)
    bar.close()
    return out.scores


class _Scores:
    """Every episode's component scores, [E, way*query, way] each, allocated once and filled chunk by chunk.

    Nothing a chunk allocates outlives it: a per-chunk result kept until the end lands on the heap among
    the chunk's large temporaries and pins them, so glibc cannot reuse their space whole, and memory grows
    by megabytes with every chunk (gigabytes over 100,000 episodes, in some processes and not others).
    """

    def __init__(self, episodes: EpisodeList) -> None:
        self.n_episodes = episodes.n_episodes
        self.scores: dict[str, NDArray[np.float32]] = {}
        self.names: set[str] | None = None  # the first chunk's components

    def put(self, chunk: slice, scored: Mapping[str, NDArray[np.floating]]) -> None:
        """Scores of the episodes ``chunk``; chunks come in order and cover the list.

        The arrays start uninitialised, so a row no chunk wrote would read as a score never computed: every
        chunk must give the first chunk's components, each with one row per episode and the same shape.
        """
        where = f"episodes {chunk.start}-{chunk.stop - 1}"
        if self.names is None:
            self.names = set(scored)
        elif set(scored) != self.names:
            raise ValueError(f"{where} scored components {sorted(scored)}, the earlier ones {sorted(self.names)}")
        for name, scores in scored.items():
            if name not in self.scores:
                self.scores[name] = np.empty((self.n_episodes, *scores.shape[1:]), dtype=np.float32)
            into = self.scores[name][chunk]
            if into.shape != scores.shape:  # numpy would broadcast a wrongly shaped result
                raise ValueError(f"component {name!r} of {where} has shape {scores.shape}, not {into.shape}")
            into[...] = scores


def episode_correct(scores: NDArray[np.float32], episodes: EpisodeList) -> NDArray[np.bool_]:
    truth = np.repeat(np.arange(episodes.way), episodes.query)
    return np.asarray(scores.argmax(axis=-1) == truth[None, :])


def choose_weights(components: Mapping[str, NDArray[np.float32]], episodes: EpisodeList) -> dict[str, float]:
    """Fusion weights with the best accuracy on (validation) episodes, over a small grid."""
    names = sorted(components)
    best: tuple[float, dict[str, float]] = (-1.0, dict.fromkeys(names, 1.0))
    for combo in itertools.product(WEIGHT_GRID, repeat=len(names)):
        if not any(combo):
            continue
        weights = dict(zip(names, combo, strict=True))
        accuracy = float(episode_correct(fuse(components, weights), episodes).mean())
        if accuracy > best[0] + 1e-12:
            best = (accuracy, weights)
    return best[1]

