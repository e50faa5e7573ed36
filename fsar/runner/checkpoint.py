"""Checkpoints of learned heads: what was trained, on which cache, and how to score with it.

A checkpoint is a plain dict of primitives and tensors (``torch.load(weights_only=True)`` reads it):
the head's name, hyperparameters and weights, the feature layout it was trained on (dims, T,
modalities, patches, temporal centring), the cache hash, the training settings and history, and the
fsar version. ``fsar eval --checkpoint`` refuses a cache the head does not fit, saying why.

Heads that read class names (:attr:`Head.uses_class_text`) get their embeddings from a
:class:`ClassText` table, computed once per training run or evaluation by :func:`class_text`. Anonymised
class names (SSv2-full's ``train3``) are embedded only through a map to their real names
(``--class-names FILE``, :mod:`fsar.datasets.class_names`), whose sha256 the table keeps for the records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from fsar import __version__
from fsar._io import atomic_write
from fsar.cache.store import FeatureCache
from fsar.datasets.class_names import ClassNameMap, is_anonymised, read_class_names
from fsar.errors import FsarError
from fsar.matchers.head import Head, config_from_params
from fsar.matchers.registry import get
from fsar.runner.encoded import encoded_scorer
from fsar.runner.scoring import ByClassNames, ByEncodedVideos

FORMAT = "fsar-head"
FORMAT_VERSION = 1

ScoreFn = Callable[[dict[str, NDArray[np.float32]], dict[str, NDArray[np.float32]], NDArray[np.int64], int],
                   dict[str, NDArray[np.float32]]]


class CheckpointError(FsarError, ValueError):
    """A checkpoint that cannot be read, or does not fit the cache it is used with."""


@dataclass(frozen=True)
class ClassText:
    """Embeddings of class names, one row per name: what heads with :attr:`Head.uses_class_text` read."""

    rows: dict[str, int]  # class name -> row of ``table``
    table: torch.Tensor  # [C, text_dim] float32, on the CPU
    mapping_sha256: str | None = None  # sha256 of the ``--class-names`` file the names went through (None: none)

    def of(self, names: Iterable[str] | NDArray[np.str_]) -> torch.Tensor:
        """Rows of ``names`` (any shape, e.g. an episode list's class_names [E, way]) -> [*shape, text_dim]."""
        names = np.asarray(names if isinstance(names, np.ndarray) else list(names), dtype=str)
        index = np.fromiter((self.rows[n] for n in names.ravel().tolist()), dtype=np.int64, count=names.size)
        return self.table[torch.from_numpy(index.reshape(names.shape))]


def class_text(matcher: str, head: Head, names: Iterable[str], class_names: str | Path | None = None
               ) -> ClassText | None:
    """The embeddings of ``names`` if ``head`` reads class names, else None (and nothing is computed).

    ``class_names``: a map file (:mod:`fsar.datasets.class_names`) whose real names are embedded in place of
    the names it lists; it is read only for a head that reads class names. A name that is only a split index
    (``test18``) left unmapped is a :class:`CheckpointError`: its embedding would carry no meaning. The
    embedder is the one ``matcher`` declares at registration; an optional encoder package that is missing
    gives a :class:`CheckpointError` that says how to install it.
    """
    if not head.uses_class_text:
        return None
    embed = get(matcher).class_text
    if embed is None:
        raise CheckpointError(f"{matcher}: the head reads class names but its registration declares no "
                              f"class_text embedder")
    unique = list(dict.fromkeys(str(n) for n in names))
    mapping = read_class_names(class_names) if class_names is not None else None
    text = _real_names(matcher, unique, mapping)
    try:
        table = embed(text)
    except ImportError as err:
        raise CheckpointError(str(err)) from err
    return ClassText({n: i for i, n in enumerate(unique)}, table.float().cpu(),
                     None if mapping is None else mapping.sha256)


def _real_names(matcher: str, names: list[str], mapping: ClassNameMap | None) -> list[str]:
    """``names`` through ``mapping``; a :class:`CheckpointError` for any that stays a split index."""
    real = [mapping.names.get(n, n) for n in names] if mapping is not None else list(names)
    left = [n for n, r in zip(names, real, strict=True) if is_anonymised(r)]
    if not left:
        return real
    shown = ", ".join(left[:5]) + (", ..." if len(left) > 5 else "")
    given = (f"the map {mapping.path} leaves {len(left)} of them unmapped" if mapping is not None
             else "pass --class-names FILE, a map to the real names ('NAME,REAL NAME' lines; for SSv2-full "
                  "`fsar class-names --out FILE` derives one where the shipped lists allow)")
    raise CheckpointError(f"{matcher} embeds class names for its semantic attention, but {len(left)} class "
                          f"name(s) are only split indices ({shown}), whose embeddings mean nothing: {given}; "
                          f"or train without semantic attention (-p text_encoder=none)")


def text_kwargs(text: ClassText | None, names: Iterable[str] | NDArray[np.str_],
                device: torch.device) -> dict[str, torch.Tensor]:
    """``class_text=`` for the classes ``names`` when there is a table; {} for heads that read no names,
    which are therefore called exactly as without class text."""
    return {} if text is None else {"class_text": text.of(names).to(device)}


def _names_kwargs(name: str, text: ClassText | None, class_names: NDArray[np.str_] | None,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """:func:`text_kwargs` of a chunk's class names; an error if the head reads names and none came."""
    if text is not None and class_names is None:
        raise ValueError(f"{name}: the head reads class names; score through score_all, which passes them")
    return text_kwargs(text, class_names if class_names is not None else (), device)


@dataclass
class Checkpoint:
    """A trained head and everything needed to use it again (or to resume its training)."""

    matcher: str
    config: dict[str, Any]
    dims: dict[str, int]
    frames: int
    modalities: tuple[str, ...]
    patches: bool
    center: bool
    cache_sha256: str
    cache_path: str
    train: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    epoch: int = 0
    val_accuracy: float = float("nan")
    history: list[dict[str, float]] = field(default_factory=list)
    fsar_version: str = __version__
    resume: dict[str, Any] | None = None  # optimiser/scaler/RNG state: only in the "last" checkpoint

    def label(self) -> str:
        return f"{self.matcher} ({Path(self.cache_path).name}, epoch {self.epoch}, val {self.val_accuracy:.2f} %)"


def head_config(matcher: str, config: dict[str, Any]) -> Any:
    """The head's Config dataclass from a stored dict (tuples come back from lists)."""
    cls = get(matcher).obj.Config
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise CheckpointError(f"checkpoint sets unknown {matcher} parameter(s) {unknown}: written by another "
                              f"fsar version? retrain with this one")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return cls(**values)


def with_eval_params(ckpt: Checkpoint, params: Mapping[str, str]) -> Checkpoint:
    """``ckpt`` with evaluation-time hyperparameters (``fsar eval -p NAME=VALUE``) set in its config.

    Only a head's ``eval_params`` may change after training; anything else needs a new ``fsar train``.
    """
    head_cls = get(ckpt.matcher).obj
    fixed = sorted(set(params) - head_cls.eval_params)
    if fixed:
        allowed = ", ".join(sorted(head_cls.eval_params)) or "none"
        raise CheckpointError(f"{ckpt.matcher} parameter(s) {', '.join(fixed)} are fixed by training: retrain with "
                              f"`fsar train -p ...` (evaluation may set: {allowed})")
    try:
        parsed = dataclasses.asdict(config_from_params(head_cls.Config, params))
    except ValueError as err:
        raise CheckpointError(f"{ckpt.matcher}: {err}") from None
    # Whether the combination still fits the trained head is checked where the head is built.
    return dataclasses.replace(ckpt, config=ckpt.config | {k: _plain(parsed[k]) for k in params})


def variant(ckpt: Checkpoint) -> str:
    """The hyperparameters that differ from the head's defaults, e.g. ``loss=ce`` ('' for none)."""
    defaults = dataclasses.asdict(get(ckpt.matcher).obj.Config())
    changed = {k: v for k, v in ckpt.config.items() if k in defaults and _plain(defaults[k]) != _plain(v)}
    return ",".join(f"{k}={_show(v)}" for k, v in sorted(changed.items()))


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def build_head(ckpt: Checkpoint, *, load_weights: bool = True) -> Head:
    """The head described by ``ckpt``, with its trained weights."""
    info = get(ckpt.matcher)
    if info.kind != "learned":
        raise CheckpointError(f"checkpoint names {ckpt.matcher!r}, which is not a learned matcher")
    try:
        head: Head = info.obj(ckpt.dims, ckpt.frames, head_config(ckpt.matcher, ckpt.config))
    except ValueError as err:  # e.g. an evaluation-time setting (``with_eval_params``) the config rejects
        raise CheckpointError(f"{ckpt.matcher}: {err}") from None
    if load_weights:
        head.load_state_dict(ckpt.state_dict)
    return head


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write ``ckpt`` atomically (a crash mid-write leaves the previous file intact)."""
    payload = dataclasses.asdict(ckpt)
    payload["modalities"] = list(ckpt.modalities)
    payload["format"], payload["format_version"] = FORMAT, FORMAT_VERSION
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train one with `fsar train --out {path}`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign or damaged files
        raise CheckpointError(f"{path} is not a readable fsar checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an fsar head checkpoint (written by `fsar train`)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {payload.get('format_version')}, this fsar reads "
                              f"{FORMAT_VERSION}: retrain with this version")
    fields = {f.name for f in dataclasses.fields(Checkpoint)}
    values = {k: v for k, v in payload.items() if k in fields}
    values["modalities"] = tuple(values["modalities"])
    return Checkpoint(**values)


def check_fits(ckpt: Checkpoint, cache: FeatureCache, *, allow_other_cache: bool = False) -> None:
    """Raise :class:`CheckpointError` if the head cannot score features of ``cache``."""
    spec = cache.spec
    for m in ckpt.modalities:
        if m not in cache.modalities:
            raise CheckpointError(f"{ckpt.matcher} was trained on {'+'.join(ckpt.modalities)} features; cache "
                                  f"{cache.path} has no {m} features (extract with --modality rgb,flow)")
        if ckpt.patches and not cache.has_patches(m):
            raise CheckpointError(f"{ckpt.matcher} reads patch features; cache {cache.path} has none for {m}")
        if ckpt.dims[m] != spec.feature_dim:
            raise CheckpointError(f"checkpoint expects {ckpt.dims[m]}-d {m} features, cache {cache.path} holds "
                                  f"{spec.feature_dim}-d ones ({spec.backbone}): train on this cache")
    if ckpt.frames != spec.frames:
        raise CheckpointError(f"checkpoint was trained on T = {ckpt.frames} frames, cache {cache.path} has "
                              f"T = {spec.frames}")
    backbone_sha256 = ckpt.train.get("backbone_sha256")
    if backbone_sha256:  # trained end to end with its backbone: it fits the caches that backbone file produced
        _check_backbone(ckpt, cache, backbone_sha256, allow_other_cache)
    elif not allow_other_cache and ckpt.cache_sha256 != cache.content_hash():
        raise CheckpointError(f"checkpoint was trained on another cache ({ckpt.cache_path}); its hash does not "
                              f"match {cache.path}. Train on this cache, or pass --allow-other-cache to "
                              f"evaluate anyway (same backbone and layout, e.g. a cross-dataset test)")


def _check_backbone(ckpt: Checkpoint, cache: FeatureCache, backbone_sha256: str, allow_other_cache: bool) -> None:
    """A head fine-tuned together with a backbone (``fsar finetune --episodic``) reads that backbone's features."""
    spec, grid = cache.spec, ckpt.train.get("patch_grid", 0)
    if ckpt.patches and grid and spec.patches != grid:
        raise CheckpointError(f"{ckpt.matcher} was trained on a {grid}x{grid} patch grid; cache {cache.path} has "
                              f"{spec.patches}x{spec.patches}: extract with --patches {grid}")
    if not allow_other_cache and spec.weights_sha256 != backbone_sha256:
        raise CheckpointError(f"{ckpt.matcher} was fine-tuned together with the backbone {ckpt.train.get('backbone')} "
                              f"(sha256 {backbone_sha256[:12]}); cache {cache.path} was extracted with {spec.weights} "
                              f"(sha256 {spec.weights_sha256[:12]}). Extract with --weights "
                              f"{ckpt.train.get('backbone')}, or pass --allow-other-cache to evaluate anyway")


def head_scorer(head: Head, device: torch.device, name: str, text: ClassText | None = None, *,
                encoded: bool = True) -> ScoreFn | ByClassNames | ByEncodedVideos:
    """Score episodes with ``head`` for :func:`~fsar.runner.scoring.score_all` (numpy in, numpy out).

    A head that splits its forward per video (:attr:`Head.encodes_videos`) gets a
    :class:`~fsar.runner.scoring.ByEncodedVideos` scorer, which encodes each distinct video of the list once
    (:mod:`fsar.runner.encoded`); ``encoded=False`` scores it episode by episode instead, the reference
    path. Otherwise episodes go through the head ``head.eval_pairs // (Q * S)`` at a time to bound memory.
    A head that reads class names needs ``text`` (from :func:`class_text`); its per-episode scorer is then a
    :class:`~fsar.runner.scoring.ByClassNames`, to which ``score_all`` also passes each chunk's class
    names [E, way], and the head gets their embeddings [E, way, text_dim] in label order.
    """
    if head.uses_class_text and text is None:
        raise CheckpointError(f"{name}: this head reads class names; pass their embeddings (class_text)")
    if encoded and head.encodes_videos:
        return encoded_scorer(head, device, name, lambda names: _names_kwargs(name, text, names, device))
    head = head.to(device).eval()

    def score(query: dict[str, NDArray[np.float32]], support: dict[str, NDArray[np.float32]],
              labels: NDArray[np.int64], way: int, class_names: NDArray[np.str_] | None = None
              ) -> dict[str, NDArray[np.float32]]:
        first = next(iter(query.values()))
        e, q, s = first.shape[0], first.shape[1], labels.shape[1]
        step = max(1, head.eval_pairs // (q * s))
        embedded = _names_kwargs(name, text, class_names, device)
        parts = []
        # fp16 on CUDA, as in training; none on CPU, where bf16 is slower than fp32 for heads this small.
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            for i in range(0, e, step):
                qs = {m: torch.from_numpy(np.ascontiguousarray(x[i:i + step])).to(device) for m, x in query.items()}
                ss = {m: torch.from_numpy(np.ascontiguousarray(x[i:i + step])).to(device) for m, x in support.items()}
                lab = torch.from_numpy(np.ascontiguousarray(labels[i:i + step])).to(device)
                extra = {k: v[i:i + step] for k, v in embedded.items()}
                parts.append(head(qs, ss, lab, way, **extra).float().cpu().numpy())
        return {name: np.concatenate(parts)}

    return score if text is None else ByClassNames(score)

