"""The options and value parsers that several commands share, each defined once.

Choices are read from their single source (the dataset catalog, the protocol presets, the matcher
registry, the backbone table, ...). Sources that import more than the standard library are read
lazily (:class:`LazyChoice`): only when the command that offers them runs or shows its help, so that
``fsar --help`` and the listing commands start at once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, get_args

import click

from fsar.cache.schema import MODALITIES, SPLITS
from fsar.errors import FsarError
from fsar.workspace import find_cache, workspace_dir

F = TypeVar("F", bound=Callable[..., Any])

DEVICE_HELP = "auto, cpu, cuda, cuda:1 ..."


def user_errors(func: F) -> F:
    """Turn the library's user-facing errors (:class:`fsar.errors.FsarError`) into a one-line message and exit
    status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FsarError as err:
            raise click.ClickException(str(err)) from err

    return wrapper  # type: ignore[return-value]


class LazyChoice(click.Choice[str]):
    """A :class:`click.Choice` whose choices are loaded on first use (parsing, help, completion)."""

    def __init__(self, load: Callable[[], Iterable[str]], case_sensitive: bool = True) -> None:
        self._load = load
        self._loaded: tuple[str, ...] | None = None
        super().__init__((), case_sensitive)

    @property
    def choices(self) -> tuple[str, ...]:
        if self._loaded is None:
            self._loaded = tuple(self._load())
        return self._loaded

    @choices.setter
    def choices(self, value: Iterable[str]) -> None:
        """Ignored: :class:`click.Choice` assigns its eager choices here; these come from ``load``."""


# --- where the choices come from -------------------------------------------------------------------


def dataset_names() -> list[str]:
    from fsar.datasets.catalog import list_datasets

    return [info.name for info in list_datasets()]


def preset_protocols() -> list[str]:
    from fsar.episodes.protocols import PROTOCOLS

    return list(PROTOCOLS)


def protocol_names() -> list[str]:
    """The preset protocols and ``custom`` (your own episode count and queries)."""
    from fsar.episodes.protocols import CUSTOM

    return [*preset_protocols(), CUSTOM]


def learned_heads() -> list[str]:
    from fsar.matchers.registry import declared

    return sorted(name for name, info in declared().items() if info.kind == "learned")


def episodic_matchers() -> list[str]:
    """Matchers a backbone can be fine-tuned through: the learned heads and the trainable parameter-free ones."""
    from fsar.matchers.registry import declared

    # two-stream heads (tsjm) are left out: a cache holds the features of one backbone's weights
    return sorted(name for name, info in declared().items()
                  if (info.kind == "learned" and not info.needs_flow) or info.trainable)


def check_matcher_name(name: str) -> None:
    """A registered matcher or 'all', checked from the registry's declarations (nothing heavy is imported)."""
    from fsar.matchers.registry import declared, unknown_matcher

    known = declared()
    if name != "all" and name not in known:
        raise click.ClickException(str(unknown_matcher(name, [*known, "all"])))


def flow_methods() -> tuple[str, ...]:
    from fsar.extract.flow import FlowMethod

    return get_args(FlowMethod)


def table_formats() -> tuple[str, ...]:
    from fsar.report.table import Format

    return get_args(Format)


# --- options ---------------------------------------------------------------------------------------

workspace_option = click.option(
    "--workspace", type=click.Path(file_okay=False, path_type=Path), default=None, envvar="FSAR_WORKSPACE",
    help="Default home of caches, episodes, checkpoints, results and tables [env FSAR_WORKSPACE; ./fsar-work].",
)


def device_option(help: str = DEVICE_HELP) -> Callable[[F], F]:
    """``--device`` (resolved by :func:`fsar._device.resolve_device` where it is used)."""
    return click.option("--device", default="auto", show_default=True, help=help)


def quiet_option(help: str = "No progress bar.") -> Callable[[F], F]:
    return click.option("--quiet", is_flag=True, help=help)


def param_option(help: str) -> Callable[[F], F]:
    """``--param/-p NAME=VALUE``, repeatable; parse with :func:`name_values`."""
    return click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE", help=help)


def modality_choice_option(**kwargs: Any) -> Callable[[F], F]:
    """``--modality`` as one of the cache's modalities (rgb or flow)."""
    return click.option("--modality", type=click.Choice(MODALITIES), **kwargs)


def split_option(**kwargs: Any) -> Callable[[F], F]:
    """``--split`` as one of the cache's splits."""
    return click.option("--split", type=click.Choice(SPLITS), **kwargs)


def results_option(func: F) -> F:
    """``--results``: a results directory [the workspace's]."""
    return click.option("--results", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Results directory [<workspace>/results].")(func)


def dataset_options(func: F) -> F:
    """The options that choose a dataset on disk: --dataset, --root, --split-set, --split-dir."""
    for option in reversed((
        click.option("--dataset", type=LazyChoice(dataset_names), required=True),
        click.option("--root", type=click.Path(path_type=Path), default=None,
                     help="Dataset directory [$FSAR_DATA/<dataset>]."),
        click.option("--split-set", default=None, help="ssv2: full (OTAM split, default) or small (CMN split)."),
        click.option("--split-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
                     help="Your own {train,val,test}list.txt files (required for --dataset folder)."),
    )):
        func = option(func)
    return func


# --- value parsers ---------------------------------------------------------------------------------


def resolve_cache(workspace: Path | None, cache: Path | None, dataset: str | None) -> Path:
    """``--cache``, else the workspace's cache (of ``--dataset``)."""
    return cache if cache is not None else find_cache(workspace_dir(workspace), dataset)


def name_values(values: tuple[str, ...]) -> dict[str, str]:
    """``--param NAME=VALUE`` options as a dict (typed later, by the head's config)."""
    out = {}
    for text in values:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected name=value, got {text!r}", param_hint="--param")
        out[name.strip()] = value.strip()
    return out


def int_list(text: str) -> list[int]:
    """``1,5`` -> [1, 5]: comma-separated positive integers."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as err:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from err
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected positive integers, got {text!r}")
    return values


def fusion_weights(text: str | None) -> dict[str, float] | str | None:
    """``rgb-otam=1,flow-km=0.5`` -> {"rgb-otam": 1.0, "flow-km": 0.5}; ``paper`` as is; None when not given
    or ``val`` (chosen on validation episodes)."""
    if not text or text.strip() == "val":
        return None
    if text.strip() == "paper":
        return "paper"
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError as err:
            raise click.BadParameter(
                f"weights are 'paper', 'val' or name=value pairs, e.g. rgb-otam=1,flow-km=0.5; got {part!r}") from err
    return out


def subset(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A comma-separated subset of ``allowed``, in ``allowed``'s order."""
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in allowed]
    if bad or not parts:
        raise click.BadParameter(f"{what} must be a comma-separated subset of {', '.join(allowed)}; got {text!r}")
    return tuple(p for p in allowed if p in parts)


def shard(text: str | None) -> tuple[int, int] | None:
    """``i/n`` with 0 <= i < n, or None."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise click.BadParameter(f"expected i/n with 0 <= i < n, got {text!r}")
    return int(match[1]), int(match[2])


class _Workers(click.ParamType):
    """A count of decoding processes (0 or more) or ``auto``."""

    name = "INTEGER|auto"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) or value == "auto":
            return value
        text = str(value)
        if not text.isdigit():
            self.fail(f"expected a number of processes (0 or more) or 'auto', got {text!r}", param, ctx)
        return int(text)


WORKERS = _Workers()
