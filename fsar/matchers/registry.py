"""The one list of matchers.

Every matcher lives in its own module under ``fsar/matchers`` and registers itself with
:func:`register`. The CLI's choices, the contract tests and the result tables all read
:data:`MATCHERS`; nothing else enumerates matchers.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

Kind = Literal["parameter-free", "learned"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class MatcherInfo:
    """What the registry knows about one matcher.

    ``obj`` is the registered object: for a parameter-free matcher the ``score`` function,
    for a learned matcher the ``torch.nn.Module`` subclass.
    """

    name: str
    kind: Kind
    paper: str
    obj: Any
    needs_flow: bool = False
    needs_patches: bool = False
    summary: str = ""
    # Named component scores ``(query {m: ..}, support {m: ..}, labels, way) -> {name: [E, Q, way]}`` that
    # the evaluator fuses itself (weights chosen on val, recorded); None: one score per stream.
    components: Callable[..., dict[str, Any]] | None = None
    # Embeds class names ``(names) -> [len(names), dim] tensor`` for a head that reads them
    # (``Head.uses_class_text``); None: the matcher never reads class names.
    class_text: Callable[[Sequence[str]], Any] | None = None


MATCHERS: dict[str, MatcherInfo] = {}

def register(
    name: str,
    *,
    kind: Kind,
    paper: str,
    needs_flow: bool = False,
    needs_patches: bool = False,
    components: Callable[..., dict[str, Any]] | None = None,
    class_text: Callable[[Sequence[str]], Any] | None = None,
) -> Callable[[F], F]:
    """Decorator adding a matcher to :data:`MATCHERS`; a duplicate name is an error.

    ``components`` and ``class_text`` declare what the evaluator and the trainer need beyond ``score``
    (see :class:`MatcherInfo`): nothing outside the registry names a matcher.
    """
    if kind not in ("parameter-free", "learned"):
        raise ValueError(f"unknown matcher kind {kind!r}")

    def decorate(obj: F) -> F:
        if name in MATCHERS:
            raise ValueError(f"matcher {name!r} is registered twice")
        doc = (obj.__doc__ or "").strip().splitlines()
        MATCHERS[name] = MatcherInfo(
            name=name,
            kind=kind,
            paper=paper,
            obj=obj,
            needs_flow=needs_flow,
            needs_patches=needs_patches,
            summary=doc[0] if doc else "",
            components=components,
            class_text=class_text,
        )
        return obj

    return decorate


def load_all() -> dict[str, MatcherInfo]:
    """Import every public module of this package so that the decorators of its matchers run.

    Modules that register nothing (kernels, similarity, fusion, head, this one) are imported too, at no
    cost: every matcher imports them anyway.
    """
    package = importlib.import_module("fsar.matchers")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.startswith("_"):
            continue
        importlib.import_module(f"fsar.matchers.{module.name}")
    return MATCHERS


def get(name: str) -> MatcherInfo:
    """The matcher called ``name``; a clear error listing the known names otherwise."""
    load_all()
    try:
        return MATCHERS[name]
    except KeyError:
        known = ", ".join(sorted(MATCHERS)) or "(none)"
        raise KeyError(f"unknown matcher {name!r}; known matchers: {known}") from None
