"""Evaluation protocols of the few-shot action recognition literature, as named presets.

A protocol fixes how many episodes are drawn, how many query videos each class gets and how the
95% confidence interval is reported. Way and shot stay free (the papers sweep them).

Sources (docs/methods.md, section Evaluation conventions):

- ``otam``: OTAM (Cao et al., CVPR 2020), followed by TRX, HyRSM, TSJM: 10,000 test episodes,
  1 query per class, CI over episodes.
- ``ita``: ITA (implicit alignment + circle loss): 600 episodes with 15 queries per class, repeated
  10 times; mean accuracy and 95% CI over the 10 runs.
- ``m3net``: M3Net (ACM MM 2023). Sec. 4.2: "We perform 5-way 1/3/5-shot evaluation ... and report the
  mean accuracy obtained from 6,000 episodes randomly selected from the testing set"; Sec. 4.1 says the
  authors fixed "the number of samples in each episode" but the paper never gives it. Its Table 1
  bounds it: a 95% CI over 6,000 episodes (1.96·std/√n) is at least what the queries of one episode
  give, 1.96·√(p(1−p)/Q_e)/√6000 for Q_e queries per episode. With 1 query per class (Q_e = 5) that floor
  is 0.38-0.52 points at M3Net's accuracies, above every ± it reports (0.24-0.34); M3Net's row needs
  Q_e >= 14, i.e. at least 3 queries per class, and 3 would leave almost no room for episodes to differ
  in difficulty. The preset uses 5 queries per class (floor 0.17-0.23), fsar's choice within that bound
  and the queries per class of ``fsar train``'s episodes (Sec. 3.1: episodic training "guarantees
  faithful training in the test environment"). One baseline cell of the same table (PAL, Diving48
  1-shot, 50.40 ± 0.24) needs Q_e >= 28 (floor 0.25 at 5 per class); every cell fits from 6 per class.
  The paper does not say what its ± is; read as one standard error, 1 query per class still misses
  several baseline cells (TSN, OTAM, PAL on Diving48).
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
        # Queries per class are not stated; 5 is within the bound Table 1's intervals set (module docstring).
        Protocol("m3net", 6_000, 1, 5, "episodes", "M3Net, ACM MM 2023, Sec. 4.2 (queries unstated; 5 per class)"),
    )
}

CUSTOM = "custom"
