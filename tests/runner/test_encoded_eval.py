"""Evaluation that encodes each distinct video once equals evaluation episode by episode, for every head
that splits its forward per video; a head without the split is scored episode by episode as before."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

import fsar.runner.scoring as scoring
from fsar.episodes import EpisodeList, sample_episodes
from fsar.matchers.hcl import HCLConfig, HCLHead
from fsar.matchers.head import Head, VideoCodes
from fsar.matchers.ita import ITAConfig, ITAHead
from fsar.matchers.m3net import M3NetConfig, M3NetHead
from fsar.matchers.rvn import RVNHead
from fsar.matchers.tap import TAPConfig, TAPHead
from fsar.matchers.trx import TRXConfig, TRXHead
from fsar.matchers.tsjm import TSJMHead
from fsar.runner.checkpoint import ClassText, head_scorer
from fsar.runner.features import LoadedFeatures
from fsar.runner.scoring import ByEncodedVideos, episode_correct, score_all

D, T, P = 8, 4, 4
CLASSES, PER_CLASS = 5, 8
TEXT_DIM = 6

HEADS: dict[str, Callable[[], Head]] = {
    "hcl": lambda: HCLHead({"rgb": D}, T, HCLConfig(heads=2, mlp_ratio=1, top_clips=3, top_patches=3,
                                                    text_encoder="none")),
    "hcl-text": lambda: HCLHead({"rgb": D}, T, HCLConfig(heads=2, mlp_ratio=1, top_clips=3, top_patches=3,
                                                         text_dim=TEXT_DIM)),
    "m3net": lambda: M3NetHead({"rgb": D}, T, M3NetConfig(patch_grid=2, cm_dim=6)),
    "m3net-transductive": lambda: M3NetHead({"rgb": D}, T, M3NetConfig(patch_grid=2, cm_dim=6, iece="transductive",
                                                                       im_alignment="otam")),
    "tap": lambda: TAPHead({"rgb": D}, T, TAPConfig(lstm_hidden=5, align_sizes=(8, 4))),
    "ita": lambda: ITAHead({"rgb": D}, T, ITAConfig(hidden=6)),
    "trx": lambda: TRXHead({"rgb": D}, T, TRXConfig(hidden=6)),
    "tsjm": lambda: TSJMHead({"rgb": D, "flow": D}, T),
}
PATCHES = {"hcl", "hcl-text", "m3net", "m3net-transductive"}


def _head(name: str) -> Head:
    torch.manual_seed(0)
    head = HEADS[name]()
    with torch.no_grad():  # untrained heads start near identities: spread the weights so that they matter
        for p in head.parameters(recurse=True):
            if not isinstance(p, torch.nn.UninitializedParameter):
                p.add_(0.3 * torch.randn_like(p))
    return head.eval()


def _episodes(shot: int, n: int = 14) -> EpisodeList:
    ids = [f"v{i:03d}" for i in range(CLASSES * PER_CLASS)]
    classes = [f"class_{i // PER_CLASS}" for i in range(CLASSES * PER_CLASS)]
    return sample_episodes(ids, classes, way=3, shot=shot, query=2, n=n, seed=shot)


def _loaded(episodes: EpisodeList, name: str) -> LoadedFeatures:
    rng = np.random.default_rng(7)
    shape = (len(episodes.ids), T, P, D) if name in PATCHES else (len(episodes.ids), T, D)
    modalities = ("rgb", "flow") if name == "tsjm" else ("rgb",)
    return LoadedFeatures({m: rng.standard_normal(shape).astype(np.float32) for m in modalities})


def _text(episodes: EpisodeList) -> ClassText:
    rng = np.random.default_rng(3)
    table = torch.from_numpy(rng.standard_normal((len(episodes.classes), TEXT_DIM)).astype(np.float32))
    return ClassText({str(c): i for i, c in enumerate(episodes.classes)}, table)


def _both_paths(head: Head, name: str, loaded: LoadedFeatures, episodes: EpisodeList
                ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    cpu = torch.device("cpu")
    text = _text(episodes) if head.uses_class_text else None
    if isinstance(head, HCLHead):  # the spatial position table is made on the first patches seen
        with torch.no_grad():
            head.encode(torch.from_numpy(loaded.features["rgb"][:1]))
    per_episode = score_all(head_scorer(head, cpu, name, text, encoded=False), loaded, episodes, False, name)
    encoded_fn = head_scorer(head, cpu, name, text)
    assert isinstance(encoded_fn, ByEncodedVideos)
    encoded = score_all(encoded_fn, loaded, episodes, False, name)
    return per_episode[name], encoded[name]


@pytest.mark.parametrize("shot", [1, 5])
@pytest.mark.parametrize("name", sorted(HEADS))
def test_encoded_path_equals_per_episode_path(name: str, shot: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scoring, "PAIRS_PER_CHUNK", 60)  # several chunks of episodes
    episodes = _episodes(shot)
    loaded = _loaded(episodes, name)
    head = _head(name)
    head.encode_batch = 7  # several encoding batches, the last one short
    per_episode, encoded = _both_paths(head, name, loaded, episodes)
    assert per_episode.shape == encoded.shape == (episodes.n_episodes, 3 * 2, 3)
    np.testing.assert_allclose(encoded, per_episode, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(encoded.argmax(-1), per_episode.argmax(-1))
    np.testing.assert_array_equal(episode_correct(encoded, episodes), episode_correct(per_episode, episodes))
    assert np.ptp(per_episode) > 1e-3  # the scores tell classes apart: the comparison is not of constants


@pytest.mark.parametrize("name", ["hcl", "m3net", "tap", "trx"])
def test_each_distinct_video_is_encoded_once(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    episodes = _episodes(1, n=30)
    loaded = _loaded(episodes, name)
    head = _head(name)
    encoded_rows: list[int] = []
    encode = head.encode_videos

    def counting(videos: dict[str, torch.Tensor]) -> VideoCodes:
        encoded_rows.append(next(iter(videos.values())).shape[1])
        return encode(videos)

    monkeypatch.setattr(head, "encode_videos", counting)
    fn = head_scorer(head, torch.device("cpu"), name)
    assert isinstance(fn, ByEncodedVideos)
    score_all(fn, loaded, episodes, False, name)
    used = np.unique(np.concatenate([episodes.query_idx.ravel(), episodes.support_idx.ravel()]))
    per_episode_videos = episodes.n_episodes * 3 * (1 + 2)
    assert sum(encoded_rows) == len(used) < per_episode_videos


@pytest.mark.parametrize("name", sorted(HEADS))
def test_encode_videos_reads_each_video_alone(name: str) -> None:
    # Row n of the codes must not change with the other videos of the batch, or encoding once is wrong.
    episodes = _episodes(1)
    features = {m: torch.from_numpy(f[:6])[None] for m, f in _loaded(episodes, name).features.items()}
    head = _head(name)
    with torch.no_grad():
        together = head.encode_videos(features)
        alone = [head.encode_videos({m: f[:, n:n + 1] for m, f in features.items()}) for n in range(6)]
    for key, code in together.items():
        assert code.shape[:2] == (1, 6)
        torch.testing.assert_close(code[0], torch.cat([a[key][0] for a in alone]), rtol=1e-5, atol=1e-6)


def test_forward_is_encode_then_match() -> None:
    episodes = _episodes(5, n=2)
    loaded = _loaded(episodes, "tap")
    head = _head("tap")
    query = {"rgb": torch.from_numpy(loaded.features["rgb"][episodes.query_idx.reshape(2, -1)])}
    support = {"rgb": torch.from_numpy(loaded.features["rgb"][episodes.support_idx.reshape(2, -1)])}
    labels = torch.arange(3).repeat_interleave(5).expand(2, -1)
    with torch.no_grad():
        codes = head.encode_videos(query), head.encode_videos(support)
        torch.testing.assert_close(head(query, support, labels, 3), head.match(*codes, labels, 3))


def test_head_without_the_split_is_scored_per_episode() -> None:
    episodes = _episodes(5)
    loaded = _loaded(episodes, "rvn")
    torch.manual_seed(0)
    head = RVNHead({"rgb": D}, T).eval()
    assert not head.encodes_videos
    fn = head_scorer(head, torch.device("cpu"), "rvn")
    assert not isinstance(fn, ByEncodedVideos)
    scores = score_all(fn, loaded, episodes, False, "rvn")["rvn"]
    with torch.no_grad():
        rows = torch.from_numpy(loaded.features["rgb"])
        q = {"rgb": rows[torch.from_numpy(episodes.query_idx.reshape(episodes.n_episodes, -1)).long()]}
        s = {"rgb": rows[torch.from_numpy(episodes.support_idx.reshape(episodes.n_episodes, -1)).long()]}
        labels = torch.arange(3).repeat_interleave(5).expand(episodes.n_episodes, -1)
        np.testing.assert_allclose(scores, head(q, s, labels, 3).numpy(), rtol=1e-5, atol=1e-6)
