"""Every learned head says, for each hyperparameter and optimiser setting, whether its default is the paper's
value (and where the paper gives it) or fsar's choice (and why)."""

from __future__ import annotations

import dataclasses

import pytest

from fsar.matchers.head import TrainDefaults, chosen, config_origins, paper, train_origins
from fsar.matchers.registry import load_all
from fsar.runner.train import describe_params

LEARNED = sorted(name for name, info in load_all().items() if info.kind == "learned")


@pytest.mark.parametrize("name", LEARNED)
def test_every_hyperparameter_has_an_origin(name: str) -> None:
    info = load_all()[name]
    origins = config_origins(info.obj.Config) + train_origins(info.obj.defaults, name)
    assert {o.source for o in origins} <= {"paper", "fsar"}
    assert all(o.note for o in origins), [o.name for o in origins if not o.note]
    text = describe_params(name)
    for o in origins:
        assert f"{o.source}: {o.note}" in text


def test_a_field_without_an_origin_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Config:
        lr_scale: float = paper(1.0, "Sec. 4")
        width: int = chosen(64, "the paper gives no width")
        depth: int = 2

    with pytest.raises(ValueError, match=r"Config.depth does not say whether its default is the paper's"):
        config_origins(Config)
    with pytest.raises(ValueError, match=r"toy.optimizer does not say.*origins="):
        train_origins(TrainDefaults(origins={"lr": "paper: Sec. 4"}), "toy")
    good = dataclasses.make_dataclass("Good", [("lr_scale", float, paper(1.0, "Sec. 4")),
                                              ("width", int, chosen(64, "the paper gives no width"))], frozen=True)
    assert [(o.source, o.note) for o in config_origins(good)] == [("paper", "Sec. 4"),
                                                                  ("fsar", "the paper gives no width")]
