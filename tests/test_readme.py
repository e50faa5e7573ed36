"""The README and docs stay true to the code and to the repository.

- The README's matcher and head tables and docs/methods.md's hyperparameter tables are the registry's
  (regenerate with ``python -m fsar.matchers.listing``).
- The README stays short enough to read: details belong in docs/ and benchmarks/results.md.
- Every relative link of the README and of docs/*.md points to a file of the repository.
- Nothing cites documents that are not in the repository, or paths of one particular machine.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from fsar.matchers.listing import BLOCKS, DOCUMENTS, block_text, update_blocks

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_CHARS = 12_000
# Spelled in pieces so that this file does not match its own check.
FORBIDDEN = ("REFERENCE_MATH" + ".md", "DESIGN" + ".md", "STYLE" + ".md", "/" + "work/")
CHECKED = ("fsar", "tests", "benchmarks", "docs", "README.md")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


GENERATED = [(path, name) for path, names in DOCUMENTS.items() for name in names]


@pytest.mark.parametrize(("path", "name"), GENERATED, ids=[name for _, name in GENERATED])
def test_generated_tables_match_the_registry(path: Path, name: str) -> None:
    text = path.read_text(encoding="utf-8")
    found = block_text(text, name)
    assert found is not None, f"{path.name} has no <!-- {name}:begin --> ... <!-- {name}:end --> block"
    assert found == BLOCKS[name](), (
        f"{path.name}'s {name} table differs from the registry; regenerate it with `python -m fsar.matchers.listing`"
    )


@pytest.mark.parametrize("path", sorted(DOCUMENTS))
def test_regenerating_the_documents_changes_nothing(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert update_blocks(text, DOCUMENTS[path]) == text, f"run `python -m fsar.matchers.listing` ({path.name})"


def test_readme_is_short() -> None:
    size = len(README.read_text(encoding="utf-8"))
    assert size <= MAX_README_CHARS, (
        f"README.md has {size:,} characters (at most {MAX_README_CHARS:,}): move details to docs/ "
        "or benchmarks/results.md and link them"
    )


def relative_links(path: Path) -> list[str]:
    """Link targets of a Markdown file that point into the repository (no URL, no bare #anchor)."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # code blocks hold commands, not links
    targets = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(path: Path) -> None:
    broken = []
    for target in relative_links(path):
        resolved = (path.parent / target).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)} links to files that do not exist: {broken}"


def repository_files() -> list[Path]:
    """Text files of the checked folders that git tracks or would track (ignored build output left out)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *CHECKED],
            cwd=ROOT, capture_output=True, check=True, timeout=60,
        ).stdout.decode().split("\0")
        paths = [ROOT / p for p in listed if p]
    except (OSError, subprocess.SubprocessError):
        paths = [README] + [p for d in CHECKED[:-1] for p in (ROOT / d).rglob("*")
                            if "__pycache__" not in p.parts]
    return sorted({p for p in paths if p.is_file()})


def test_no_citation_of_documents_outside_the_repository() -> None:
    offenders = []
    for path in repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary data
        for number, line in enumerate(text.splitlines(), 1):
            hits = [word for word in FORBIDDEN if word in line]
            if hits:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {', '.join(hits)}")
    assert not offenders, (
        "these lines cite documents that are not in the repository or an absolute path of one machine "
        "(cite docs/methods.md, or a path relative to the repository):\n" + "\n".join(offenders)
    )
