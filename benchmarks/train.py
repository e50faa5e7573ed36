"""Training speed of every learned head on cached features, against the backbone in the loop.

A training step here is one 5-way 1-shot episode with 5 queries per class (T = 8 frames, D = 1280, the
EfficientNet-Lite0 width; 256 with --quick; heads that read patches get P = 4): forward, loss, backward, optimiser step.
The baseline, measured in the same run, is what the reference repositories do per episode: run the
ResNet-50 backbone over the episode's 240 frames (forward only, 224 px; 112 px with --quick), which a
feature cache removes. Run: ``python -m benchmarks --only train`` (or ``python -m benchmarks.train``).
"""

from __future__ import annotations

import torch
import torchvision

from benchmarks._common import Table, best_seconds, ratio
from fsar.matchers.head import Head, episode_targets
from fsar.matchers.registry import load_all
from fsar.runner.train import make_optimiser

WAY, SHOT, QUERY, T, D, P = 5, 1, 5, 8, 1280, 4


def _episode(needs_patches: bool, modalities: tuple[str, ...], device: torch.device, dim: int):
    gen = torch.Generator().manual_seed(0)
    shape = (T, P, dim) if needs_patches else (T, dim)
    query = {m: torch.randn(1, WAY * QUERY, *shape, generator=gen).to(device) for m in modalities}
    support = {m: torch.randn(1, WAY * SHOT, *shape, generator=gen).to(device) for m in modalities}
    labels = torch.arange(WAY).repeat_interleave(SHOT)[None].to(device)
    return query, support, labels, episode_targets(WAY, QUERY, 1, device)


def step_seconds(name: str, device: torch.device, repeats: int, dim: int = D) -> tuple[float, int]:
    """Fastest training step of head ``name`` (seconds) and its number of parameters."""
    info = load_all()[name]
    modalities = ("rgb", "flow") if info.needs_flow else ("rgb",)
    torch.manual_seed(0)
    head: Head = info.obj({m: dim for m in modalities}, T).to(device).train()
    optimiser = make_optimiser(list(head.parameters()), info.obj.defaults)
    query, support, labels, targets = _episode(info.needs_patches, modalities, device, dim)
    # Heads that read class names (hcl's semantic attention) get a fixed random embedding per class.
    gen = torch.Generator().manual_seed(1)
    text = ({"class_text": torch.randn(1, WAY, head.config.text_dim, generator=gen).to(device)}
            if head.uses_class_text else {})

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss, _ = head.loss(query, support, labels, WAY, targets, **text)
        loss.backward()
        optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up (lazy allocations, numba compilation)
    return best_seconds(step, repeats), sum(p.numel() for p in head.parameters())


def backbone_seconds(device: torch.device, size: int, repeats: int) -> float:
    """ResNet-50 forward over one episode's frames: (way * (shot + query)) videos x T frames."""
    model = torchvision.models.resnet50(weights=None).to(device).eval()
    frames = torch.randn(WAY * (SHOT + QUERY) * T, 3, size, size, device=device)

    def forward() -> None:
        with torch.inference_mode():
            for chunk in frames.split(16):
                model(chunk)
        if device.type == "cuda":
            torch.cuda.synchronize()

    forward()
    return best_seconds(forward, repeats)


def tables(quick: bool = False) -> list[Table]:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    names = sorted(n for n, info in load_all().items() if info.kind == "learned")
    size = 112 if quick else 224
    repeats = 2 if quick else 5
    dim = 256 if quick else D
    out = []
    for device in devices:
        baseline = backbone_seconds(device, size, 1 if quick else 2)
        table = Table(f"Training speed of learned heads on {device.type} (5-way 1-shot, 5 queries, T=8, D={dim})",
                      ["head", "parameters", "ms / episode", "episodes / s", "vs backbone in the loop"])
        for name in names:
            seconds, n_params = step_seconds(name, device, repeats, dim)
            table.add(name, f"{n_params / 1e6:.2f} M", f"{1e3 * seconds:,.0f}", f"{1 / seconds:,.1f}",
                      ratio(baseline, seconds))
        table.notes = [
            f"baseline: ResNet-50 forward over the episode's {WAY * (SHOT + QUERY) * T} frames at {size} px, "
            f"{1e3 * baseline:,.0f} ms per episode, measured in the same run (what training on raw video costs "
            "before any head runs); the ratio is how many times faster a head trains on cached features",
            "fastest of repeated steps (forward, loss, backward, optimiser step; the paper's optimiser)",
        ]
        out.append(table)
    return out


if __name__ == "__main__":
    for t in tables():
        print(t.markdown())
