"""``fsar demo``: the whole pipeline on the built-in synthetic dataset, on a laptop, offline.

synth -> extract (EfficientNet-Lite0, RGB + flow + 2x2 patches) -> fixed episodes -> eval of every
parameter-free matcher at 5-way 1-shot and 5-shot -> training of a learned head on the train split and
its evaluation on the same episodes -> table, plot and paired comparisons. Every stage is resumable:
running the demo again reuses what exists.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fsar.datasets.synthetic import synthesize, write_contact_sheet
from fsar.episodes import load_episodes
from fsar.extract.run import ExtractConfig, describe, run_extraction
from fsar.matchers.registry import get
from fsar.report.pairs import compare_latest, labelled_records, plot_from_dir, table_from_dir
from fsar.runner.evaluate import EvalPlan, run_plan
from fsar.workspace import DemoLayout, cache_path

Echo = Callable[[str], None]

# The (A, B) pairs the demo compares on identical episodes: the standard protocol on raw features,
# what temporal centring recovers, temporal vs order-free matching, and what flow adds.
COMPARISONS = (("otam", "proto"), ("otam/c", "otam"), ("otam/c", "km/c"), ("dtw/c", "km/c"),
               ("otam@flow", "otam"), ("otam@rgb+flow/c", "otam/c"), ("jmm@rgb+flow/c", "jmm/c"),
               ("ita/c", "proto/c"), ("ita/c", "otam/c"))
STREAM_MATCHERS = ("otam", "km", "jmm")


@dataclass(frozen=True)
class DemoConfig:
    videos_per_class: int = 12
    size: int = 128
    input_size: int = 112
    episodes: int = 2_000
    shots: tuple[int, ...] = (1, 5)
    workers: int = 2
    seed: int = 0
    heads: tuple[str, ...] = ("ita",)  # learned heads trained on centred RGB features, one per shot
    train_episodes: int = 1_200  # training episodes per head (4 epochs)


def _synth(data: Path, config: DemoConfig, echo: Echo, progress: bool) -> None:
    marker = data / "classes.json"
    if marker.exists() and _synth_matches(data, config):
        echo(f"      reusing {data}")
        return
    summary = synthesize(data, videos_per_class=config.videos_per_class, size=config.size, seed=config.seed,
                         progress=progress)
    echo(f"      {summary.n_videos:,} videos of {summary.n_classes} classes in {summary.seconds:.0f} s -> {data}")
    (data / "demo.json").write_text(json.dumps({"videos_per_class": config.videos_per_class, "size": config.size,
                                                "seed": config.seed}))


def _synth_matches(data: Path, config: DemoConfig) -> bool:
    stamp = data / "demo.json"
    if not stamp.exists():
        return False
    saved = json.loads(stamp.read_text())
    return bool(saved == {"videos_per_class": config.videos_per_class, "size": config.size, "seed": config.seed})


def run_demo(workspace: Path, config: DemoConfig = DemoConfig(), *, echo: Echo = print,
             progress: bool = True) -> Path:
    """Run every stage into ``workspace``; returns the path of the written report (Markdown)."""
    started = time.perf_counter()
    layout = DemoLayout(workspace)
    data = layout.data
    echo(f"[1/6] synthetic dataset ({config.videos_per_class} videos per class, {config.size} px)")
    _synth(data, config, echo, progress)
    sheet = write_contact_sheet(data, layout.contact_sheet)
    echo(f"      contact sheet of the classes: {sheet}")

    echo("[2/6] extract: efficientnet_lite0 (ImageNet), rgb + flow, 2x2 patches, train + val + test splits")
    out = cache_path(workspace, "synthetic", "efficientnet_lite0", "imagenet")
    extract = ExtractConfig(dataset="synthetic", root=data, backbone="efficientnet_lite0",
                            modalities=("rgb", "flow"), patches=2, short_side=config.input_size,
                            input_size=config.input_size, splits=("train", "val", "test"), workers=config.workers,
                            seed=config.seed)
    for line in describe(run_extraction(extract, out, progress=progress)).splitlines():
        echo(f"      {line}")

    echo(f"[3/6] + [4/6] fixed episodes ({config.episodes:,} per setting, seed {config.seed}) and evaluation")
    results = layout.results
    base = EvalPlan(matchers="all", cache=out, shots=config.shots, way=5, workspace=workspace,
                    protocol="otam" if config.episodes == 10_000 else "custom", n_episodes=config.episodes,
                    seed=config.seed, out=results)
    plans = [base, replace(base, center=True)]
    plans += [replace(base, matchers=m, modality="flow") for m in STREAM_MATCHERS]
    # Streams are fused with weights chosen on val; a method made of components (jmm: OTAM + KM per stream)
    # keeps every component as published instead of letting val weights drop one.
    plans += [replace(base, matchers=m, modality="rgb+flow", center=True,
                      weights="paper" if get(m).components is not None else None) for m in STREAM_MATCHERS]
    _evaluate(plans, echo, progress)

    echo(f"[5/6] train {', '.join(config.heads)} on the train split (centred RGB, {config.train_episodes:,} "
         "episodes) and evaluate on the same test episodes")
    _evaluate(_train_heads(layout, out, base, config, echo, progress), echo, progress)

    echo("[6/6] table, plot and paired comparisons")
    return _report(layout, echo, started)


def _train_heads(layout: DemoLayout, cache: Path, base: EvalPlan, config: DemoConfig, echo: Echo,
                 progress: bool) -> list[EvalPlan]:
    """Train each head of ``config.heads`` per shot (resuming finished runs); eval plans of the checkpoints."""
    from fsar.report.plot import plot_history
    from fsar.runner.train import TrainConfig, train

    epochs = 4
    plans = []
    for head in config.heads:
        for shot in config.shots:
            out = layout.checkpoint(head, shot)
            run = TrainConfig(matcher=head, shots=shot, way=5, query=3, epochs=epochs,
                              episodes_per_epoch=config.train_episodes // epochs, optimizer="adam", lr=1e-3,
                              center=True, seed=config.seed, device="cpu")
            ckpt = train(run, cache, out, val_episodes=300, resume=True, progress=progress,
                         echo=lambda line: echo(f"      {line}"))
            plot_history(ckpt.history, out.with_suffix(".png"), title=f"{head}, 5-way {shot}-shot")
            echo(f"      {head} {shot}-shot: best epoch {ckpt.epoch}, val {ckpt.val_accuracy:.1f} % -> {out}")
            plans.append(replace(base, matchers=head, shots=(shot,), checkpoint=out))
    return plans


def _evaluate(plans: list[EvalPlan], echo: Echo, progress: bool) -> None:
    for plan in plans:
        for line in run_plan(plan, progress=progress):
            echo(f"      {line}")


def _report(layout: DemoLayout, echo: Echo, started: float) -> Path:
    results = layout.results
    layout.report.parent.mkdir(parents=True, exist_ok=True)
    table = table_from_dir(results, "md")
    plot = plot_from_dir(results, "bars", layout.plot)
    lines = ["# fsar demo: synthetic dataset, EfficientNet-Lite0 features", "",
             "Accuracy (%) ± 95% CI. `/c`: RGB features centred in time; `@flow`, `@rgb+flow`: streams.", "",
             table, "", "## Paired comparisons (same episodes; 95% CI by paired bootstrap; exact McNemar)", ""]
    for a, b in COMPARISONS:
        try:
            lines.extend(f"- {line}" for line in compare_latest(results, a, b))
        except ValueError as err:
            lines.append(f"- {a} vs {b}: not compared ({err})")
    lines += ["", "## By class type (accuracy on queries of single-primitive vs ordered-pair 'A then B' classes)",
              "", breakdown_table(results)]
    report = layout.report
    report.write_text("\n".join(lines) + "\n")
    for line in lines[4:]:
        echo(line)
    echo(f"report: {report}\nplot:   {plot}\ndone in {time.perf_counter() - started:.0f} s")
    return report


def breakdown_table(results: Path) -> str:
    """Markdown: per run, accuracy on queries whose class is one primitive vs an ordered pair."""
    rows = ["| run | shot | single primitive | ordered pair |", "|---|---|---|---|"]
    for rec in sorted(labelled_records(results), key=lambda r: (r.matcher, r.shot)):
        episodes = load_episodes(rec.episodes_path)
        # Column w*query + j of ``correct`` is query j of episode class w.
        names = np.repeat(episodes.class_names, episodes.query, axis=1)
        pair = np.char.find(names.astype(str), "_then_") >= 0
        cells = [f"{100 * rec.correct[mask].mean():.1f}" if mask.any() else "-" for mask in (~pair, pair)]
        rows.append(f"| {rec.matcher} | {rec.shot} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows)
