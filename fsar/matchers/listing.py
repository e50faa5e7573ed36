"""The README's matcher and learned-head tables and docs/methods.md's hyperparameter tables, from the registry.

The registry is the one list of matchers, so the tables a user reads are made from it rather than
kept by hand: ``python -m fsar.matchers.listing`` rewrites the blocks between markers
``<!-- NAME:begin -->`` / ``<!-- NAME:end -->``: ``matchers`` and ``heads`` in README.md,
``hyperparameters`` (every head's settings, each the paper's value or fsar's choice) in docs/methods.md;
``--check`` only reports whether they are up to date. A test compares them.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fsar.matchers.registry import MatcherInfo, load_all

__all__ = ["BLOCKS", "DOCUMENTS", "METHODS", "README", "block_text", "head_table", "hyperparameter_tables", "main",
           "matcher_table", "update_blocks"]

# The repository's documents when fsar runs from a checkout (``pip install -e .``).
README = Path(__file__).resolve().parents[2] / "README.md"
METHODS = Path(__file__).resolve().parents[2] / "docs" / "methods.md"


def _cell(text: str) -> str:
    """``text`` made safe for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _needs(info: MatcherInfo) -> str:
    parts = [what for what, flag in (("flow", info.needs_flow), ("patches", info.needs_patches)) if flag]
    return ", ".join(parts) if parts else "–"


def _number(value: float) -> str:
    """1e-05 -> 1e-5, 0.001 -> 1e-3, 40.0 -> 40, 0.9 -> 0.9."""
    if value != 0 and abs(value) < 0.01:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:g}"


def _optimiser(defaults: Any) -> str:
    """A head's default optimiser settings (:class:`fsar.matchers.head.TrainDefaults`) in one line."""
    name = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}.get(defaults.optimizer, defaults.optimizer)
    parts = [f"{name} {_number(defaults.lr)}"]
    if defaults.optimizer == "sgd" and defaults.momentum:
        parts.append(f"momentum {_number(defaults.momentum)}")
    if defaults.weight_decay:
        parts.append(f"wd {_number(defaults.weight_decay)}")
    if defaults.clip_norm is not None:
        parts.append(f"clip {_number(defaults.clip_norm)}")
    if defaults.tasks_per_step > 1:
        parts.append(f"{defaults.tasks_per_step} tasks per step")
    if defaults.lr_decay_every:
        parts.append(f"×{_number(defaults.lr_decay)} every {defaults.lr_decay_every:,} episodes")
    return ", ".join(parts)


def _rows(kind: str) -> list[MatcherInfo]:
    return [info for _, info in sorted(load_all().items()) if info.kind == kind]


def matcher_table() -> str:
    """Markdown table of the parameter-free matchers: name, what it does, what it needs, paper."""
    lines = ["| name | what it does | needs | paper |", "|---|---|---|---|"]
    for info in _rows("parameter-free"):
        lines.append(f"| `{info.name}` | {_cell(info.summary)} | {_needs(info)} | {_cell(info.paper)} |")
    return "\n".join(lines)


def head_table() -> str:
    """Markdown table of the learned heads: name, what it does, needs, paper (their settings, optimisers
    included, are in docs/methods.md's generated tables)."""
    lines = ["| name | what it does | needs | paper |", "|---|---|---|---|"]
    for info in _rows("learned"):
        lines.append(f"| `{info.name}` | {_cell(info.summary)} | {_needs(info)} | {_cell(info.paper)} |")
    return "\n".join(lines)


def _origin_rows(origins: list[Any]) -> list[str]:
    from fsar.matchers.head import show_value  # torch: only when the tables are made

    return [f"| `{o.name}` | {_cell(show_value(o.value)) or '(empty)'} | {o.source} | {_cell(o.note)} |"
            for o in origins]


def hyperparameter_tables() -> str:
    """Per learned head, every hyperparameter (``-p NAME=VALUE``) and optimiser setting (``fsar train`` flags)
    with its default and origin: ``paper`` (where the paper gives it) or ``fsar`` (why fsar chose it)."""
    from fsar.matchers.head import config_origins, train_origins

    parts = []
    for info in _rows("learned"):
        lines = [f"#### `{info.name}`", "", f"Optimiser: {_optimiser(info.obj.defaults)}.", "",
                 "| setting | default | from | where in the paper, or why |", "|---|---|---|---|"]
        lines += _origin_rows(config_origins(info.obj.Config))
        lines += _origin_rows(train_origins(info.obj.defaults, info.name))
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


BLOCKS: dict[str, Callable[[], str]] = {"matchers": matcher_table, "heads": head_table,
                                        "hyperparameters": hyperparameter_tables}
DOCUMENTS: dict[Path, tuple[str, ...]] = {README: ("matchers", "heads"), METHODS: ("hyperparameters",)}


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {name}:begin -->\n)(.*?)(<!-- {name}:end -->)", re.DOTALL)


def block_text(text: str, name: str) -> str | None:
    """The content between the ``name`` markers of ``text``, without the blank lines around it; None if absent."""
    match = _pattern(name).search(text)
    return match[2].strip("\n") if match else None


def update_blocks(text: str, names: Sequence[str] = DOCUMENTS[README]) -> str:
    """``text`` with the generated blocks ``names`` (default: the README's) replaced by the current output.

    Raises ValueError when a block's markers are missing.
    """
    for name in names:
        generate = BLOCKS[name]
        match = _pattern(name).search(text)
        if match is None:
            raise ValueError(f"no <!-- {name}:begin --> ... <!-- {name}:end --> block")
        text = f"{text[:match.start()]}{match[1]}\n{generate()}\n\n{match[3]}{text[match.end():]}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite (or with ``--check`` only compare) the generated blocks of the README and docs/methods.md."""
    parser = argparse.ArgumentParser(prog="python -m fsar.matchers.listing", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a block is out of date; write nothing")
    args = parser.parse_args(argv)
    status = 0
    for path, names in DOCUMENTS.items():
        text = path.read_text(encoding="utf-8")
        new = update_blocks(text, names)
        if new == text:
            print(f"{path}: up to date")
        elif args.check:
            print(f"{path}: out of date; run python -m fsar.matchers.listing")
            status = 1
        else:
            path.write_text(new, encoding="utf-8")
            print(f"{path}: rewritten")
    return status


if __name__ == "__main__":
    sys.exit(main())
