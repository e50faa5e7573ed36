"""Evaluation protocols of the few-shot action recognition literature, as named presets.

A protocol fixes how many episodes are drawn, how many query videos each class gets and how the
95% confidence interval is reported. Way and shot stay free (the papers sweep them).

Sources (docs/methods.md, section Evaluation conventions):

- ``otam``: OTAM (Cao et al., CVPR 2020), followed by TRX, HyRSM, TSJM: 10,000 test episodes,
  1 query per class, CI over episodes.
- ``ita``: ITA (implicit alignment + circle loss): 600 episodes with 15 queries per class, repeated
  10 times; mean accuracy and 95% CI over the 10 runs.
- ``m3net``: M3Net (ACM MM 2023, Sec. 4.2): "mean accuracy obtained from 6,000 episodes randomly
  selected from the testing set", 95% CI. The paper does not state the number of queries per class;
  1 query per class, as in the OTAM protocol it compares against, is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CiOver = Literal["episodes", "runs"]


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: episode count, queries per class and how the CI is taken.

    ``n_episodes`` counts all episodes of the list (``n_runs * episodes_per_run``); with
    ``n_runs > 1`` the runs are contiguous blocks of ``episodes_per_run`` episodes.
    """

    name: str
    episodes_per_run: int
    n_runs: int
    query: int
    ci_over: CiOver
    source: str

    @property
    def n_episodes(self) -> int:
        """Total number of episodes in a list drawn with this protocol."""
        return self.episodes_per_run * self.n_runs


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("otam", 10_000, 1, 1, "episodes", "Cao et al., CVPR 2020 (also TRX, HyRSM, TSJM)"),
        Protocol("ita", 600, 10, 15, "runs", "ITA: 10 runs x 600 episodes, 15 queries per class"),
        Protocol("m3net", 6_000, 1, 1, "episodes", "M3Net, ACM MM 2023, Sec. 4.2 (queries unstated)"),
    )
}

CUSTOM = "custom"
