"""The README's matcher and learned-head tables, generated from the registry.

The registry is the one list of matchers, so the tables a user reads are made from it rather than
kept by hand: ``python -m fsar.matchers.listing`` rewrites the blocks of README.md between the markers
``<!-- matchers:begin -->`` / ``<!-- matchers:end -->`` and ``<!-- heads:begin -->`` /
``<!-- heads:end -->``; ``--check`` only reports whether they are up to date. A test compares them.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fsar.matchers.registry import MatcherInfo, load_all

__all__ = ["BLOCKS", "README", "block_text", "head_table", "main", "matcher_table", "update_blocks"]

# The repository's README when fsar runs from a checkout (``pip install -e .``).
README = Path(__file__).resolve().parents[2] / "README.md"


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
    """Markdown table of the learned heads: name, what it does, needs, paper, default optimiser."""
    lines = ["| name | what it does | needs | paper | default optimiser |", "|---|---|---|---|---|"]
    for info in _rows("learned"):
        optimiser = _optimiser(info.obj.defaults) if hasattr(info.obj, "defaults") else "–"
        lines.append(f"| `{info.name}` | {_cell(info.summary)} | {_needs(info)} | {_cell(info.paper)} "
                     f"| {optimiser} |")
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[], str]] = {"matchers": matcher_table, "heads": head_table}


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {name}:begin -->\n)(.*?)(<!-- {name}:end -->)", re.DOTALL)


def block_text(text: str, name: str) -> str | None:
    """The content between the ``name`` markers of ``text``, without the blank lines around it; None if absent."""
    match = _pattern(name).search(text)
    return match[2].strip("\n") if match else None


def update_blocks(text: str) -> str:
    """``text`` with every generated block replaced by the generator's current output.

    Raises ValueError when a block's markers are missing.
    """
    for name, generate in BLOCKS.items():
        match = _pattern(name).search(text)
        if match is None:
            raise ValueError(f"no <!-- {name}:begin --> ... <!-- {name}:end --> block")
        text = f"{text[:match.start()]}{match[1]}\n{generate()}\n\n{match[3]}{text[match.end():]}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite (or with ``--check`` only compare) the generated blocks of the README."""
    parser = argparse.ArgumentParser(prog="python -m fsar.matchers.listing", description=__doc__.splitlines()[0])
    parser.add_argument("readme", nargs="?", type=Path, default=README, help="default: %(default)s")
    parser.add_argument("--check", action="store_true", help="exit 1 if a block is out of date; write nothing")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    new = update_blocks(text)
    if new == text:
        print(f"{args.readme}: up to date")
        return 0
    if args.check:
        print(f"{args.readme}: out of date; run python -m fsar.matchers.listing")
        return 1
    args.readme.write_text(new, encoding="utf-8")
    print(f"{args.readme}: rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
