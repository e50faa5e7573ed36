"""The one list of matchers.

Every matcher lives in its own module under ``fsar/matchers`` and registers itself with
:func:`register`. The contract tests, the evaluator and the result tables read :data:`MATCHERS`
(filled by :func:`load_all`); nothing else enumerates matchers. :func:`declared` reads the same
metadata from the ``@register(...)`` decorators' source text, without importing the matchers (and
so torch and numba): the command line lists matchers and offers their names with it.
"""

from __future__ import annotations

import ast
import functools
import importlib
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from fsar.errors import FsarError

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
    # True when the score reads the features only through the frame cosines of each (query, support) pair
    # (fsar.matchers.similarity.pair_scores / frame_similarity): the evaluator then gathers those cosines
    # from a table of the list's videos and does not copy each episode's features.
    frame_cosines_only: bool = False
    # True for a parameter-free matcher with a differentiable training form in
    # :mod:`fsar.matchers.differentiable`, through which ``fsar finetune --episodic`` trains a backbone.
    trainable: bool = False


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
    frame_cosines_only: bool = False,
    trainable: bool = False,
) -> Callable[[F], F]:
    """Decorator adding a matcher to :data:`MATCHERS`; a duplicate name is an error.

    ``components``, ``class_text``, ``frame_cosines_only`` and ``trainable`` declare what the evaluator and the
    trainers need beyond ``score`` (see :class:`MatcherInfo`): nothing outside the registry names a matcher.
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
            frame_cosines_only=frame_cosines_only,
            trainable=trainable,
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


class UnknownMatcherError(FsarError, LookupError):
    """A matcher name that is not registered."""


def unknown_matcher(name: str, known: Sequence[str]) -> UnknownMatcherError:
    """The error for ``name``, listing the known names (and the case-insensitive match, if there is one)."""
    close = [k for k in known if k.lower() == name.strip().lower()]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UnknownMatcherError(f"unknown matcher {name!r}{hint}; known matchers: {', '.join(sorted(known)) or '(none)'}"
                               f" (see `fsar matchers`)")


def get(name: str) -> MatcherInfo:
    """The matcher called ``name``; a clear error listing the known names otherwise."""
    load_all()
    try:
        return MATCHERS[name]
    except KeyError:
        raise unknown_matcher(name, list(MATCHERS)) from None


# --- metadata read from the source text ---------------------------------------------------------


@dataclass(frozen=True)
class Declaration:
    """A matcher's metadata as its ``@register(...)`` decorator declares it (the fields of
    :class:`MatcherInfo` that are plain data), and the module that declares it."""

    name: str
    kind: Kind
    paper: str
    needs_flow: bool
    needs_patches: bool
    summary: str
    module: str
    trainable: bool = False


#: The fields of :class:`Declaration` that :class:`MatcherInfo` has too (and must agree on).
DECLARED_FIELDS = ("name", "kind", "paper", "needs_flow", "needs_patches", "summary", "trainable")
_PACKAGE = "fsar.matchers"
_Decorated = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
_DIRECTORY = Path(__file__).resolve().parent


def declared() -> dict[str, Declaration]:
    """Every registered matcher's metadata, read from the source of this package's public modules.

    The same modules as :func:`load_all`, parsed with :mod:`ast` instead of imported: the decorator's
    arguments may be literals or module-level string constants (also one imported from a sibling
    module, ``from fsar.matchers.km import TSJM``); ``summary`` is the first line of the decorated
    object's docstring. A decorator this cannot read is a ValueError naming its file and line.
    """
    return dict(_declared())


@functools.cache
def _declared() -> dict[str, Declaration]:
    found: dict[str, Declaration] = {}
    for module in pkgutil.iter_modules([str(_DIRECTORY)]):
        if module.name.startswith("_"):
            continue
        for decl in _module_declarations(f"{_PACKAGE}.{module.name}"):
            if decl.name in found:
                raise ValueError(f"matcher {decl.name!r} is registered twice ({found[decl.name].module}, "
                                 f"{decl.module})")
            found[decl.name] = decl
    return found


def _source_path(module: str) -> Path:
    relative = Path(*module.split(".")[len(_PACKAGE.split(".")):])
    path = _DIRECTORY / relative.with_suffix(".py")
    return path if path.is_file() else _DIRECTORY / relative / "__init__.py"


@functools.cache
def _source(module: str) -> str:
    return _source_path(module).read_text(encoding="utf-8")


@functools.cache
def _parse(module: str) -> ast.Module:
    return ast.parse(_source(module), str(_source_path(module)))


def _register_calls(tree: ast.Module) -> Iterator[tuple[ast.Call, _Decorated]]:
    """The ``register(...)`` decorators of the module's top-level functions and classes."""
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and _called_name(decorator.func) == "register":
                yield decorator, node


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else None


def _module_declarations(module: str) -> Iterator[Declaration]:
    if "register(" not in _source(module):
        return
    for call, node in _register_calls(_parse(module)):
        yield _declaration(call, node, module)


def _declaration(call: ast.Call, node: _Decorated, module: str) -> Declaration:
    where = f"{_source_path(module)}:{call.lineno}"
    args = dict(zip(("name",), call.args, strict=False))
    args.update({kw.arg: kw.value for kw in call.keywords if kw.arg is not None})
    if not {"name", "kind", "paper"} <= args.keys():
        raise ValueError(f"{where}: register(...) without its name, kind or paper")
    values = {key: _evaluate(expr, module, where) for key, expr in args.items()
              if key in ("name", "kind", "paper", "needs_flow", "needs_patches", "trainable")}
    doc = (ast.get_docstring(node, clean=False) or "").strip().splitlines()
    return Declaration(name=values["name"], kind=values["kind"], paper=values["paper"],
                       needs_flow=bool(values.get("needs_flow", False)),
                       needs_patches=bool(values.get("needs_patches", False)),
                       summary=doc[0] if doc else "", module=module,
                       trainable=bool(values.get("trainable", False)))


def _evaluate(node: ast.expr, module: str, where: str, seen: frozenset[str] = frozenset()) -> Any:
    """The value of a literal, a string concatenation or a module-level constant (local or imported)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _evaluate(node.left, module, where, seen) + _evaluate(node.right, module, where, seen)
    if isinstance(node, ast.Name):
        return _constant(module, node.id, where, seen)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        source = _imported_modules(module).get(node.value.id)
        if source is not None:
            return _constant(source, node.attr, where, seen)
    raise ValueError(f"{where}: cannot read {ast.unparse(node)!r} without importing the module; "
                     "use a literal or a module-level string constant")


def _constant(module: str, name: str, where: str, seen: frozenset[str]) -> Any:
    key = f"{module}.{name}"
    if key in seen:
        raise ValueError(f"{where}: {key} refers back to itself")
    seen = seen | {key}
    for node in _parse(module).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return _evaluate(node.value, module, where, seen)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name \
                and node.value is not None:
            return _evaluate(node.value, module, where, seen)
        if isinstance(node, ast.ImportFrom):
            source = _absolute(node, module)
            for alias in node.names:
                if (alias.asname or alias.name) == name and source.startswith(f"{_PACKAGE}."):
                    return _constant(source, alias.name, where, seen)
    raise ValueError(f"{where}: no module-level constant {name} in {module}")


def _imported_modules(module: str) -> dict[str, str]:
    """Local name -> sibling module, for ``from fsar.matchers import km`` and ``import fsar.matchers.km as km``."""
    names: dict[str, str] = {}
    for node in _parse(module).body:
        if isinstance(node, ast.ImportFrom):
            base = _absolute(node, module)
            names.update({a.asname or a.name: f"{base}.{a.name}" for a in node.names if base == _PACKAGE})
        elif isinstance(node, ast.Import):
            names.update({a.asname: a.name for a in node.names if a.asname and a.name.startswith(f"{_PACKAGE}.")})
    return names


def _absolute(node: ast.ImportFrom, module: str) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")[: -node.level]
    return ".".join([*package, node.module] if node.module else package)
