"""How much of a split list an episode pool covers: what tells a benchmark number from a partial one."""

from __future__ import annotations

from typing import NamedTuple


class Coverage(NamedTuple):
    """How much of a split list an episode pool holds."""

    videos: int  # in the pool
    listed: int  # in the split list
    classes: int
    listed_classes: int

    @property
    def partial(self) -> bool:
        return self.videos < self.listed or self.classes < self.listed_classes

    def line(self, split: str) -> str:
        """``pool: 50 of 2,857 test videos, 5 of 24 classes — not the full benchmark`` (or ``— the full split
        list``)."""
        return (f"pool: {self.videos:,} of {self.listed:,} {split} videos, {self.classes} of {self.listed_classes} "
                f"classes — " + ("not the full benchmark" if self.partial else "the full split list"))
