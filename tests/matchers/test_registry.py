"""The registry's metadata read from the source (``declared``) is what the decorators register (``load_all``)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from fsar.matchers import registry
from fsar.matchers.registry import DECLARED_FIELDS, declared, load_all


def test_declared_names_are_the_registered_names() -> None:
    assert sorted(declared()) == sorted(load_all())


@pytest.mark.parametrize("name", sorted(load_all()))
def test_declared_agrees_field_by_field(name: str) -> None:
    info, decl = load_all()[name], declared()[name]
    for field in DECLARED_FIELDS:
        assert getattr(decl, field) == getattr(info, field), f"{name}.{field}"
    assert decl.module == info.obj.__module__


def test_constants_are_resolved_across_sibling_modules() -> None:
    # jmm registers with paper=TSJM imported from km, hcl with paper=HCL imported from zoom.
    found = declared()
    assert found["jmm"].paper == found["km"].paper and "TSJM" in found["km"].paper
    assert found["hcl"].paper == found["zoom"].paper and "ECCV 2022" in found["hcl"].paper


def test_an_unreadable_argument_is_a_clear_error() -> None:
    call = ast.parse("make_paper()", mode="eval").body
    with pytest.raises(ValueError, match=r"here: cannot read 'make_paper\(\)'"):
        registry._evaluate(call, "fsar.matchers.km", "here")
    with pytest.raises(ValueError, match="no module-level constant NOPE"):
        registry._evaluate(ast.Name("NOPE"), "fsar.matchers.km", "here")


def test_declared_imports_no_matcher_module() -> None:
    code = ("import json, sys; from fsar.matchers.registry import declared; declared(); "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numba', 'numpy') "
            "or m.startswith('fsar.matchers.') and m != 'fsar.matchers.registry')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert json.loads(out) == []


def test_trainable_matchers_are_the_ones_with_a_differentiable_form() -> None:
    from fsar.matchers.differentiable import TRAINABLE

    trainable = {name for name, info in declared().items() if info.trainable}
    assert trainable == set(TRAINABLE) and {"otam", "proto"} <= trainable
    assert all(declared()[name].kind == "parameter-free" for name in trainable)
