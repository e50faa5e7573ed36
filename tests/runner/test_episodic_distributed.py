"""torchrun for episodic fine-tuning: two gloo processes share every step's episodes and train the weights of one.

Two CPU processes (torch.multiprocessing, a file rendezvous) fine-tune EfficientNet-Lite0 through ``proto`` on a
tiny synthetic dataset; their backbone must equal one process's, parameter by parameter. The running statistics of
the one BatchNorm partial BN trains are rank 0's by design (they follow its episodes only), so they are compared
apart: equal on both ranks' output, not to one process's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fsar.datasets.synthetic import synthesize
from fsar.extract.backbone import load_backbone
from fsar.runner.episodic import EpisodicConfig, finetune_episodic
from tests.gloo import spawn

SIZE, FRAMES = 32, 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("episodic-dist")
    synthesize(root, classes=16, videos_per_class=2, size=SIZE, seed=5, progress=False)
    return root


def _config(root: Path) -> EpisodicConfig:
    return EpisodicConfig(dataset="synthetic", root=root, matcher="proto", backbone="efficientnet_lite0", way=2,
                          shots=1, query=1, episodes_per_epoch=4, epochs=2, val_episodes=4, lr=1e-2,
                          tasks_per_step=2, frames=FRAMES, input_size=SIZE, short_side=SIZE, workers=0,
                          device="cpu", seed=1)


def _train(root: Path, out: Path) -> None:
    finetune_episodic(_config(root), out, progress=False)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_two_processes_fine_tune_the_backbone_of_one(dataset: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    _train(dataset, tmp_path / "one.pt")
    spawn(_train, tmp_path, dataset, tmp_path / "two.pt", timeout_s=120)
    one, two = _weights(tmp_path / "one.pt"), _weights(tmp_path / "two.pt")
    start = load_backbone("efficientnet_lite0", "imagenet", "cpu").model.state_dict()
    assert one.keys() == two.keys()
    trained_bn = "_bn0."  # the first BatchNorm: partial BN trains it, its running statistics are rank 0's
    moved = 0
    for name, value in one.items():
        if name.startswith(trained_bn) and ("running" in name or "num_batches" in name):
            continue
        torch.testing.assert_close(two[name], value, rtol=1e-4, atol=1e-6, msg=name)
        moved += int(name.startswith("_blocks") and not torch.equal(value, start[name]))
    assert moved > 0  # training changed the blocks, so the equality says something

