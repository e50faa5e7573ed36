"""Score a matcher on a fixed episode list read from a feature cache, and record the result.

Features of every video the list uses are read once (float16, a split's worth fits in memory);
episodes are then scored in chunks so that memory does not grow with their number.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm import tqdm

from fsar.cache.schema import Status
from fsar.cache.store import FeatureCache, open_cache
from fsar.episodes import EpisodeError, EpisodeList, check_episodes_fit, iter_chunks, load_episodes, save_episodes
from fsar.episodes import sample_episodes as draw_episodes
from fsar.matchers import jmm
from fsar.matchers.registry import MatcherInfo, get
from fsar.report.results import Record, file_sha256, make_record

Features = dict[str, NDArray[np.float32]]
ComponentFn = Callable[[Features, Features, NDArray[np.int64], int], dict[str, NDArray[np.float32]]]

# Per chunk of episodes: at most this many (query, support) pairs and this many gathered feature values,
# which bounds the similarity tensors and the per-episode feature copies to tens of MB.
PAIRS_PER_CHUNK = 60_000
VALUES_PER_CHUNK = 16_000_000
WEIGHT_GRID = (0.0, 0.5, 1.0)


def parse_modality(modality: str) -> tuple[str, ...]:
    parts = tuple(modality.split("+"))
    if not parts or any(p not in ("rgb", "flow") for p in parts) or len(set(parts)) != len(parts):
        raise EpisodeError(f"--modality must be rgb, flow or rgb+flow, got {modality!r}")
    return parts


def split_pool(cache: FeatureCache, split: str, modality: str = "rgb") -> tuple[list[str], list[str], int]:
    """Ids and class names of a split's usable videos, and how many were left out (not done/unreadable)."""
    rows = cache.rows_of_split(split)
    if modality not in cache.modalities:
        modality = cache.modalities[0]
    usable = cache.done(modality)[rows] & (cache.status(modality)[rows] != Status.UNREADABLE)
    kept = rows[usable]
    return cache.ids[kept].tolist(), cache.class_of(kept).tolist(), int((~usable).sum())


def episodes_for(cache: FeatureCache, *, split: str, way: int, shot: int, seed: int, protocol: str,
                 query: int | None = None, n: int | None = None) -> EpisodeList:
    """Draw an episode list over the usable videos of one split of ``cache``."""
    ids, classes, missing = split_pool(cache, split)
    return draw_episodes(ids, classes, way=way, shot=shot, query=query, n=n, seed=seed, protocol=protocol,
                         dataset=cache.spec.dataset, split=split, excluded_missing=missing)


def ensure_episodes(path: Path, cache: FeatureCache, **kwargs: Any) -> EpisodeList:
    """Load the fixed list at ``path``, drawing and saving it on first use."""
    if path.exists():
        return load_episodes(path)
    episodes = episodes_for(cache, **kwargs)
    save_episodes(episodes, path)
    return episodes


def _components_fn(info: MatcherInfo) -> ComponentFn:
    """Named per-stream scores: jmm's four components, or one score per modality for other matchers."""
    if info.name == "jmm":
        return jmm.component_scores

    def components(query: Features, support: Features, labels: NDArray[np.int64], way: int) -> dict[str, Any]:
        return {f"{m}-{info.name}": info.obj(query[m], support[m], labels, way) for m in query}

    return components


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


def _load_once(memo: FeatureMemo | None, cache: FeatureCache, episodes: EpisodeList, modalities: tuple[str, ...],
               patches: bool, center: bool) -> LoadedFeatures:
    if memo is None:
        return load_features(cache, episodes, modalities, patches, center)
    key = (modalities, patches, center)
    if key not in memo:
        memo[key] = load_features(cache, episodes, modalities, patches, center)
    return memo[key]


def center_in_time(features: NDArray[np.float16]) -> NDArray[np.float16]:
    """Subtract each video's mean over time: [N, T, ...] -> [N, T, ...].

    What stays constant through a video (its appearance: background, actor, lighting) cancels and
    what changes (the motion) remains. Mean pooling of a centred video is zero, so ``proto`` is
    undefined (at chance) on centred features by construction.
    """
    centred = features.astype(np.float32) - features.astype(np.float32).mean(axis=1, keepdims=True)
    return centred.astype(np.float16)


class _Gatherer:
    """``features[index]`` into buffers kept across chunks.

    Episode inputs are copies of the loaded features (the matcher contract takes per-episode arrays).
    A fresh buffer per chunk costs more in page faults than the copy itself; torch's ``index_select``
    into a reused buffer was 6x faster than numpy fancy indexing into new arrays (measured).
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

    def episode_inputs(self, chunk: EpisodeList) -> tuple[Features, Features, NDArray[np.int64]]:
        e, way, shot = chunk.support_idx.shape
        query = {m: self.gather(m, "query", chunk.query_idx.reshape(e, -1)) for m in self.features}
        support = {m: self.gather(m, "support", chunk.support_idx.reshape(e, -1)) for m in self.features}
        labels = np.broadcast_to(np.repeat(np.arange(way), shot), (e, way * shot)).astype(np.int64)
        return query, support, labels


@dataclass(frozen=True)
class ByClassNames:
    """A scorer that also reads the class names of each episode, [E, way] in label order (a learned head
    whose matching uses them); :func:`score_all` passes them to it and to no other scorer."""

    score: Callable[[Features, Features, NDArray[np.int64], int, NDArray[np.str_]], dict[str, NDArray[np.float32]]]


def score_all(
    fn: ComponentFn | ByClassNames, loaded: LoadedFeatures, episodes: EpisodeList, progress: bool, desc: str
) -> dict[str, NDArray[np.float32]]:
    """Component scores of every episode, [E, way*query, way] each."""
    per_episode = episodes.way * episodes.query * episodes.way * episodes.shot
    video_values = max(f[0].size for f in loaded.features.values())
    values = episodes.way * (episodes.query + episodes.shot) * video_values
    chunk_size = max(1, min(PAIRS_PER_CHUNK // per_episode, VALUES_PER_CHUNK // values))
    parts: dict[str, list[NDArray[np.float32]]] = {}
    bar = tqdm(total=episodes.n_episodes, desc=desc, unit="ep", disable=not progress, leave=False)
    gatherer = _Gatherer(loaded)
    for _, chunk in iter_chunks(episodes, chunk_size):
        query, support, labels = gatherer.episode_inputs(chunk)
        if isinstance(fn, ByClassNames):
            scored = fn.score(query, support, labels, episodes.way, chunk.class_names)
        else:
            scored = fn(query, support, labels, episodes.way)
        for name, scores in scored.items():
            # A fresh copy, not the matcher's own array: that one is allocated among the chunk's large
            # temporaries, and keeping it pinned the heap around it (measured: RSS grew by ~4 MB per chunk,
            # 1.4 GB at 10,000 episodes and 4.1 GB at 100,000; flat with the copy).
            parts.setdefault(name, []).append(np.array(scores, dtype=np.float32, copy=True))
        bar.update(chunk.n_episodes)
    bar.close()
    return {name: np.concatenate(p) for name, p in parts.items()}


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
        accuracy = float(episode_correct(jmm.fuse(components, weights), episodes).mean())
        if accuracy > best[0] + 1e-12:
            best = (accuracy, weights)
    return best[1]


@dataclass(frozen=True)
class EvalRun:
    """How one matcher is evaluated; ``weights`` fixes the fusion of several streams/components.

    Learned matchers need ``checkpoint`` (from ``fsar train``); their modalities and temporal
    centring come from it. ``modality=None`` means rgb, or the checkpoint's.
    """

    matcher: str
    modality: str | None = None
    center: bool = False
    weights: Mapping[str, float] | None = None
    val_episodes: int = 500
    seed: int = 0
    checkpoint: str | Path | None = None
    allow_other_cache: bool = False
    device: str = "auto"
    params: Mapping[str, str] | None = None  # evaluation-time head hyperparameters (``fsar eval -p``)


def evaluate(run: EvalRun, cache_path: str | Path, episodes_path: str | Path, *,
             progress: bool = True, memo: FeatureMemo | None = None) -> Record:
    """Score ``run.matcher`` on every episode of the list at ``episodes_path``; the result record.

    With two modalities and no given weights, the fusion weights of the components (jmm's four
    scores, or one score per stream) are chosen on validation-split episodes of the same way/shot —
    never on the test episodes. One modality uses the matcher's own equal-weight fusion.
    ``memo`` (one per cache and episode list) keeps the loaded features for the next matcher.
    """
    info = get(run.matcher)
    cache = open_cache(cache_path)
    episodes = load_episodes(episodes_path)
    start = time.perf_counter()
    if info.kind == "learned":
        scores, params, modality = _score_learned(run, cache, episodes, progress, memo)
    else:
        scores, params, modality = _score_parameter_free(run, info, cache, episodes, progress, memo)
    seconds = time.perf_counter() - start
    return make_record(
        matcher=run.matcher, params=params, dataset=episodes.dataset or cache.spec.dataset,
        split=episodes.split, way=episodes.way, shot=episodes.shot, query=episodes.query,
        protocol=episodes.protocol, n_runs=episodes.n_runs, modality=modality, cache_path=str(cache_path),
        cache_sha256=cache.content_hash(), episodes_path=str(episodes_path),
        episodes_sha256=file_sha256(episodes_path), correct=episode_correct(scores, episodes), seconds=seconds,
        checkpoint=None if run.checkpoint is None else str(run.checkpoint),
        extra={"backbone": cache.spec.backbone, "patches": cache.spec.patches},
    )


def _score_parameter_free(run: EvalRun, info: MatcherInfo, cache: FeatureCache, episodes: EpisodeList,
                          progress: bool, memo: FeatureMemo | None) -> tuple[NDArray[np.float32], dict[str, Any], str]:
    if run.checkpoint is not None or run.params:
        raise EpisodeError(f"matcher {run.matcher!r} is parameter-free: it takes no --checkpoint or --param")
    modality = run.modality or "rgb"
    modalities = parse_modality(modality)
    if info.needs_flow and "flow" not in modalities:
        raise EpisodeError(f"matcher {run.matcher!r} needs flow features: use --modality rgb+flow")
    fn = _components_fn(info)
    loaded = _load_once(memo, cache, episodes, modalities, info.needs_patches, run.center)
    components = score_all(fn, loaded, episodes, progress, run.matcher)
    weights = dict(run.weights) if run.weights is not None else None
    if weights is None and len(modalities) > 1:  # one stream: the matcher's own equal-weight fusion
        weights = _weights_on_val(run, cache, episodes, fn, info.needs_patches, modalities, progress)
    scores = jmm.fuse(components, weights) if len(components) > 1 else next(iter(components.values()))
    params: dict[str, Any] = {"weights": weights} if weights else {}
    if run.center:
        params["center"] = True
    return scores, params, modality


def _score_learned(run: EvalRun, cache: FeatureCache, episodes: EpisodeList,
                   progress: bool, memo: FeatureMemo | None) -> tuple[NDArray[np.float32], dict[str, Any], str]:
    from fsar.matchers.checkpoint import (
        build_head,
        check_fits,
        class_text,
        head_scorer,
        load_checkpoint,
        pick_device,
        variant,
        with_eval_params,
    )

    if run.checkpoint is None:
        raise EpisodeError(f"matcher {run.matcher!r} is learned: train it with `fsar train --matcher "
                           f"{run.matcher}` and evaluate with --checkpoint")
    ckpt = load_checkpoint(run.checkpoint)
    if ckpt.matcher != run.matcher:
        raise EpisodeError(f"{run.checkpoint} holds a {ckpt.matcher} head, not {run.matcher}")
    if run.params:
        ckpt = with_eval_params(ckpt, run.params)
    check_fits(ckpt, cache, allow_other_cache=run.allow_other_cache)
    modality = "+".join(ckpt.modalities)
    if run.modality not in (None, modality):
        raise EpisodeError(f"the {ckpt.matcher} checkpoint was trained on {modality} features, not {run.modality}")
    if run.center and not ckpt.center:
        raise EpisodeError("the checkpoint was trained without --center: retrain with --center to evaluate so")
    head = build_head(ckpt)
    text = class_text(head, episodes.classes.tolist())  # every class name of the list, embedded once
    loaded = _load_once(memo, cache, episodes, ckpt.modalities, ckpt.patches, ckpt.center)
    fn = head_scorer(head, pick_device(run.device), run.matcher, text)
    scores = score_all(fn, loaded, episodes, progress, run.matcher)[run.matcher]
    params: dict[str, Any] = {
        "checkpoint": str(run.checkpoint), "checkpoint_sha256": file_sha256(run.checkpoint),
        "epoch": ckpt.epoch, "val_accuracy": ckpt.val_accuracy, "config": ckpt.config,
        "trained_shots": ckpt.train.get("shots"),
    }
    if variant(ckpt):
        params["variant"] = variant(ckpt)
    if ckpt.center:
        params["center"] = True
    return scores, params, modality


def _weights_on_val(run: EvalRun, cache: FeatureCache, test: EpisodeList, fn: ComponentFn, patches: bool,
                    modalities: tuple[str, ...], progress: bool) -> dict[str, float]:
    # A small val split may hold fewer classes than the test way: choose weights at the largest way it has.
    n_val_classes = len(set(split_pool(cache, "val")[1]))
    try:
        val = episodes_for(cache, split="val", way=max(2, min(test.way, n_val_classes)), shot=test.shot,
                           query=test.query, n=run.val_episodes, seed=run.seed, protocol="custom")
    except EpisodeError as err:
        raise EpisodeError(f"choosing fusion weights needs validation episodes ({err}); "
                           f"or give the weights with --weights") from err
    loaded = load_features(cache, val, modalities, patches, run.center)
    return choose_weights(score_all(fn, loaded, val, progress, "val weights"), val)


def summary_line(record: Record) -> str:
    """``otam  5-way 1-shot  45.12 ± 0.97 %  (10,000 episodes, 3.1 s)``."""
    mod = ("" if record.modality == "rgb" else f" [{record.modality}]") + (
        " centred" if record.params.get("center") else "")
    return (f"{record.matcher:<8}{mod} {record.way}-way {record.shot}-shot  {record.accuracy:6.2f} ± "
            f"{record.ci95:.2f} %  ({record.n_episodes:,} episodes, {record.seconds:.1f} s)")



@dataclass(frozen=True)
class EvalPlan:
    """What ``fsar eval`` runs: matchers x shots on one cache, with fixed episode lists."""

    matchers: str  # a name or "all"
    cache: Path
    shots: tuple[int, ...]
    way: int
    workspace: Path
    episodes: Path | None = None
    protocol: str = "otam"
    modality: str | None = None  # rgb; a learned matcher's checkpoint fixes its own
    weights: Mapping[str, float] | None = None
    seed: int = 0
    out: Path | None = None
    n_episodes: int = 10_000  # with protocol "custom" (1 query per class); presets fix their own
    center: bool = False
    checkpoint: Path | None = None
    allow_other_cache: bool = False
    device: str = "auto"
    params: Mapping[str, str] | None = None


def runnable_matchers(cache: FeatureCache, modality: str) -> tuple[list[str], list[str]]:
    """Parameter-free matchers this cache can feed, and the skipped ones with the reason."""
    from fsar.matchers.registry import load_all

    modalities = parse_modality(modality)
    ok, skipped = [], []
    for name, info in sorted(load_all().items()):
        if info.kind != "parameter-free":
            continue
        if info.needs_patches and not all(cache.has_patches(m) for m in modalities if m in cache.modalities):
            skipped.append(f"{name} (needs patch features: extract with --patches 2)")
        elif info.needs_flow and "flow" not in modalities:
            skipped.append(f"{name} (needs --modality rgb+flow)")
        else:
            ok.append(name)
    return ok, skipped


def run_plan(plan: EvalPlan, *, progress: bool = True, as_json: bool = False) -> Iterator[str]:
    """Evaluate every (matcher, shot) of ``plan``, write the records, yield one line per run."""
    from fsar.report.results import record_to_json, write_record
    from fsar.workspace import episodes_path

    cache = open_cache(plan.cache)
    if plan.checkpoint is None:
        for m in parse_modality(plan.modality or "rgb"):
            cache.require(m)
    if plan.matchers == "all":
        if plan.checkpoint is not None:
            raise EpisodeError("--checkpoint holds one learned head: name it with --matcher, not 'all'")
        names, skipped = runnable_matchers(cache, plan.modality or "rgb")
        for reason in skipped:
            yield f"skipped {reason}"
    else:
        names = [get(plan.matchers).name]
    out = plan.out or plan.workspace / "results"
    lists = [plan.episodes] if plan.episodes is not None else []
    for shot in plan.shots if plan.episodes is None else ():
        custom = plan.protocol == "custom"
        query = 1 if custom else _protocol_query(plan.protocol)
        tag = f"custom{plan.n_episodes}" if custom else plan.protocol
        path = episodes_path(plan.workspace, cache.spec.dataset, "test", plan.way, shot, query or 1, tag)
        ensure_episodes(path, cache, split="test", way=plan.way, shot=shot, seed=plan.seed, protocol=plan.protocol,
                        query=query if custom else None, n=plan.n_episodes if custom else None)
        lists.append(path)
    for ep_path in lists:
        memo: FeatureMemo = {}  # per list: memory holds one list's features at a time
        for name in names:
            run = EvalRun(name, modality=plan.modality, center=plan.center, weights=plan.weights, seed=plan.seed,
                          checkpoint=plan.checkpoint, allow_other_cache=plan.allow_other_cache, device=plan.device,
                          params=plan.params)
            record = evaluate(run, plan.cache, ep_path, progress=progress, memo=memo)
            write_record(out, record)
            yield record_to_json(record) if as_json else summary_line(record)


def _protocol_query(protocol: str) -> int | None:
    from fsar.episodes import PROTOCOLS

    return PROTOCOLS[protocol].query if protocol in PROTOCOLS else None
