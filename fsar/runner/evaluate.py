"""Score a matcher on a fixed episode list read from a feature cache, and record the result.

A plan (``fsar eval``) runs matchers x shots over fixed episode lists; each run reads its features
through :mod:`fsar.runner.features`, scores through :mod:`fsar.runner.scoring` and writes one record.

Under torchrun each rank scores a contiguous share of the list's episodes and every rank receives all the scores
(:mod:`fsar.runner.distributed`), so the record is the one a single process writes; rank 0 writes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fsar._device import resolve_device
from fsar.cache.store import FeatureCache, open_cache
from fsar.episodes import PROTOCOLS, EpisodeError, EpisodeList, load_episodes
from fsar.episodes.pool import coverage, ensure_episodes, episodes_for, split_pool
from fsar.matchers.fusion import PAPER, dropped_label, fuse
from fsar.matchers.registry import MatcherInfo, get, load_all
from fsar.report.results import Record, file_sha256, fsar_version, make_record, record_to_json, write_record
from fsar.runner import distributed
from fsar.runner.checkpoint import (
    build_head,
    check_fits,
    class_text,
    head_scorer,
    load_checkpoint,
    variant,
    with_eval_params,
)
from fsar.runner.features import FeatureMemo, Features, load_features, load_once, parse_modality
from fsar.runner.scoring import ComponentFn, choose_weights, episode_correct, score_all
from fsar.workspace import episodes_path, results_dir


def _components_fn(info: MatcherInfo) -> ComponentFn:
    """Named per-stream scores: the components the matcher declares, or one score per modality."""
    if info.components is not None:
        return info.components

    def components(query: Features, support: Features, labels: NDArray[np.int64], way: int) -> dict[str, Any]:
        return {f"{m}-{info.name}": info.obj(query[m], support[m], labels, way) for m in query}

    return components



@dataclass(frozen=True)
class EvalRun:
    """How one matcher is evaluated; ``weights`` fixes the fusion of several streams/components: a mapping of
    component name to weight, ``"paper"`` (equal weights, the method as published) or None (chosen on
    validation episodes when there are several streams).

    Learned matchers need ``checkpoint`` (from ``fsar train``); their modalities and temporal
    centring come from it. ``modality=None`` means rgb, or the checkpoint's.
    """

    matcher: str
    modality: str | None = None
    center: bool = False
    weights: Mapping[str, float] | str | None = None
    val_episodes: int = 500
    seed: int = 0
    checkpoint: str | Path | None = None
    allow_other_cache: bool = False
    device: str = "auto"
    params: Mapping[str, str] | None = None  # evaluation-time head hyperparameters (``fsar eval -p``)
    class_names: str | Path | None = None  # anonymised -> real class names (``--class-names``)


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
    world = distributed.current()
    progress = progress and world.main
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
        extra={"backbone": cache.spec.backbone, "patches": cache.spec.patches}
        | ({"world_size": world.size} if world.size > 1 else {}),  # how it ran, not what the numbers depend on
        provenance=_provenance(cache, episodes, modality, run.center),
    )


def _provenance(cache: FeatureCache, episodes: EpisodeList, modality: str, center: bool) -> dict[str, Any]:
    """What a record's numbers depend on besides the matcher: the cache, its pool and the episode list.

    Tables never put two records of different provenance in one cell (fsar.report.provenance); the coverage
    flags a pool smaller than the split list, whose number is not the benchmark's.
    """
    spec = cache.spec
    videos, listed, classes, listed_classes = coverage(cache, episodes.split)
    return {
        "dataset": episodes.dataset or spec.dataset, "split_set": spec.split_set, "split": episodes.split,
        "backbone": spec.backbone, "weights": spec.weights, "weights_sha256": spec.weights_sha256,
        "precision": spec.precision, "patches": spec.patches, "views": spec.views, "frames": spec.frames,
        "input_size": spec.input_size, "feature_dtype": spec.feature_dtype, "cache_sha256": cache.content_hash(),
        "modality": modality, "center": bool(center), "seed": episodes.seed, "protocol": episodes.protocol,
        "pool_sha256": episodes.pool_sha256, "pool_videos": videos, "listed_videos": listed,
        "pool_classes": classes, "listed_classes": listed_classes, "fsar_version": fsar_version(), "known": True,
    }


def _score_parameter_free(run: EvalRun, info: MatcherInfo, cache: FeatureCache, episodes: EpisodeList,
                          progress: bool, memo: FeatureMemo | None) -> tuple[NDArray[np.float32], dict[str, Any], str]:
    if run.checkpoint is not None or run.params:
        raise EpisodeError(f"matcher {run.matcher!r} is parameter-free: it takes no --checkpoint or --param")
    modality = run.modality or "rgb"
    modalities = parse_modality(modality)
    if info.needs_flow and "flow" not in modalities:
        raise EpisodeError(f"matcher {run.matcher!r} needs flow features: use --modality rgb+flow")
    fn = _components_fn(info)
    mine = _share(episodes)
    loaded = load_once(memo, cache, mine, modalities, info.needs_patches, run.center)
    scored = score_all(fn, loaded, mine, progress, run.matcher, frame_cosines_only=info.frame_cosines_only)
    components = distributed.gather_rows(scored, distributed.current())
    params: dict[str, Any] = {}
    if len(components) > 1:
        weights, params["weights_from"] = _fusion_weights(run, cache, episodes, fn, info, modalities, progress)
        weights = weights or dict.fromkeys(components, 1.0)
        params["weights"] = {name: weights.get(name, 0.0) for name in sorted(components)}
        scores = fuse(components, weights)
    else:
        scores = next(iter(components.values()))
    if run.center:
        params["center"] = True
    return scores, params, modality


def _score_learned(run: EvalRun, cache: FeatureCache, episodes: EpisodeList,
                   progress: bool, memo: FeatureMemo | None) -> tuple[NDArray[np.float32], dict[str, Any], str]:

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
    # every class name of the list, embedded once
    text = class_text(run.matcher, head, episodes.classes.tolist(), run.class_names)
    mine = _share(episodes)
    loaded = load_once(memo, cache, mine, ckpt.modalities, ckpt.patches, ckpt.center)
    fn = head_scorer(head, resolve_device(run.device), run.matcher, text)
    scores = distributed.gather_rows(score_all(fn, loaded, mine, progress, run.matcher),
                                     distributed.current())[run.matcher]
    params: dict[str, Any] = {
        "checkpoint": str(run.checkpoint), "checkpoint_sha256": file_sha256(run.checkpoint),
        "epoch": ckpt.epoch, "val_accuracy": ckpt.val_accuracy, "config": ckpt.config,
        "trained_shots": ckpt.train.get("shots"),
    }
    if text is not None and text.mapping_sha256 is not None:  # which real names fed the semantic attention
        params["class_names_sha256"] = text.mapping_sha256
    if variant(ckpt):
        params["variant"] = variant(ckpt)
    if ckpt.center:
        params["center"] = True
    return scores, params, modality


def _share(episodes: EpisodeList) -> EpisodeList:
    """This process's episodes: all of them, or under torchrun its rank's contiguous share.

    The share keeps the list's vocabulary, so each rank reads the features of every video of the list (a test
    split is small) and a memo of the list stays valid; the scoring is what is split.
    """
    world = distributed.current()
    if world.size == 1:
        return episodes
    if episodes.n_episodes < world.size:
        raise EpisodeError(f"{episodes.n_episodes} episodes cannot be shared by {world.size} processes")
    part = world.part(episodes.n_episodes)
    return episodes.slice(part.start, part.stop)


def _fusion_weights(run: EvalRun, cache: FeatureCache, episodes: EpisodeList, fn: ComponentFn, info: MatcherInfo,
                    modalities: tuple[str, ...], progress: bool) -> tuple[dict[str, float], str]:
    """The weights of the components and where they come from: given (``--weights``), ``paper`` (every
    component weighs 1 after z-normalisation: the method as published), or chosen on validation episodes
    (several streams, no weights given); a single stream fuses its matcher's components equally."""
    if isinstance(run.weights, Mapping):
        return dict(run.weights), "given"
    if run.weights == PAPER or len(modalities) == 1:
        return {}, "paper" if run.weights == PAPER else "equal"
    return _weights_on_val(run, cache, episodes, fn, info, modalities, progress), "val"


def _weights_on_val(run: EvalRun, cache: FeatureCache, test: EpisodeList, fn: ComponentFn, info: MatcherInfo,
                    modalities: tuple[str, ...], progress: bool) -> dict[str, float]:
    # A small val split may hold fewer classes than the test way: choose weights at the largest way it has.
    n_val_classes = len(set(split_pool(cache, "val")[1]))
    try:
        val = episodes_for(cache, split="val", way=max(2, min(test.way, n_val_classes)), shot=test.shot,
                           query=test.query, n=run.val_episodes, seed=run.seed, protocol="custom")
    except EpisodeError as err:
        raise EpisodeError(f"choosing fusion weights needs validation episodes ({err}); "
                           f"or give the weights with --weights") from err
    loaded = load_features(cache, val, modalities, info.needs_patches, run.center)
    scored = score_all(fn, loaded, val, progress, "val weights", frame_cosines_only=info.frame_cosines_only)
    return choose_weights(scored, val)


def summary_line(record: Record) -> str:
    """``otam  5-way 1-shot  45.12 ± 0.97 %  (10,000 episodes, 3.1 s)``; ``[km 0]`` after the modality when the
    fusion weights leave a component out."""
    drop = dropped_label(record.params.get("weights"))
    mod = ("" if record.modality == "rgb" else f" [{record.modality}]") + (
        " centred" if record.params.get("center") else "") + (f" [{drop}]" if drop else "")
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
    weights: Mapping[str, float] | str | None = None
    seed: int = 0
    out: Path | None = None
    n_episodes: int = 10_000  # with protocol "custom" (1 query per class); presets fix their own
    center: bool = False
    checkpoint: Path | None = None
    allow_other_cache: bool = False
    device: str = "auto"
    params: Mapping[str, str] | None = None
    class_names: Path | None = None


def runnable_matchers(cache: FeatureCache, modality: str) -> tuple[list[str], list[str]]:
    """Parameter-free matchers this cache can feed, and the skipped ones with the reason."""
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


def fusion_warning(record: Record) -> str | None:
    """A warning when the record's fusion weights leave out a component of what its name says it is."""
    drop = dropped_label(record.params.get("weights"))
    if not drop:
        return None
    how = {"val": "chosen on validation episodes", "given": "given"}.get(record.params.get("weights_from", ""), "")
    return (f"warning: {record.matcher} [{record.modality}] {record.way}-way {record.shot}-shot: the fusion weights "
            f"{how} leave out {drop}, so this is not {record.matcher} as published; its label says [{drop}]. "
            f"`--weights paper` weighs every component equally")


def run_plan(plan: EvalPlan, *, progress: bool = True, as_json: bool = False,
             warn: Callable[[str], None] | None = None) -> Iterator[str]:
    """Evaluate every (matcher, shot) of ``plan``, write the records, yield one line per run.

    Notes (skipped matchers, a partial pool, fusion warnings) are yielded as lines too, or handed to ``warn``
    when given with ``as_json`` (so that stdout holds only JSON records).
    """
    world = distributed.current()
    for line in _run_plan(plan, progress and world.main, as_json, world):
        if not world.main:  # every rank scores; rank 0 alone reports
            continue
        if warn is not None and as_json and not line.startswith("{"):
            warn(line)
        else:
            yield line


def _run_plan(plan: EvalPlan, progress: bool, as_json: bool, world: distributed.World) -> Iterator[str]:

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
    out = plan.out or results_dir(plan.workspace)
    lists = [plan.episodes] if plan.episodes is not None else []
    for shot in plan.shots if plan.episodes is None else ():
        custom = plan.protocol == "custom"
        query = 1 if custom else _protocol_query(plan.protocol)
        tag = f"custom{plan.n_episodes}" if custom else plan.protocol
        path = episodes_path(plan.workspace, dataset=cache.spec.dataset, split_set=cache.spec.split_set, split="test",
                             way=plan.way, shot=shot, query=query or 1, protocol=tag, seed=plan.seed)
        with distributed.main_first(world):  # rank 0 draws and writes a missing list; the others read it
            ensure_episodes(path, cache, split="test", way=plan.way, shot=shot, seed=plan.seed,
                            protocol=plan.protocol, query=query if custom else None,
                            n=plan.n_episodes if custom else None)
        lists.append(path)
    # Workspace lists are drawn from the test split; a given list says its own (read once here, for its header).
    split = load_episodes(plan.episodes).split if plan.episodes is not None else "test"
    pool = coverage(cache, split)
    if pool.partial:
        yield pool.line(split)
    for ep_path in lists:
        memo: FeatureMemo = {}  # per list: memory holds one list's features at a time
        for name in names:
            run = EvalRun(name, modality=plan.modality, center=plan.center, weights=plan.weights, seed=plan.seed,
                          checkpoint=plan.checkpoint, allow_other_cache=plan.allow_other_cache, device=plan.device,
                          params=plan.params, class_names=plan.class_names)
            record = evaluate(run, plan.cache, ep_path, progress=progress, memo=memo)
            if world.main:
                write_record(out, record)
            yield record_to_json(record) if as_json else summary_line(record)
            warning = fusion_warning(record)
            if warning:
                yield warning


def _protocol_query(protocol: str) -> int | None:
    return PROTOCOLS[protocol].query if protocol in PROTOCOLS else None

