"""HCL's zoom-in matching on unit codes (normalised once per video, best cosine per support frame first)
equals Eq. 2-6 written out pair by pair, and the former implementation (normalising in every episode, all
patch-pair blocks of the picked clips gathered) in scores, picked clip pairs, logits, losses and gradients."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import fsar.matchers.hcl as hcl
from fsar.matchers._hcl_losses import Encoded, gather_frames, semantic_attention
from fsar.matchers._hcl_match import Zoom, normalized_cues, zoom_in
from fsar.matchers.hcl import HCLConfig, HCLHead
from fsar.matchers.head import episode_targets, shot_mean

D = 8


# ----------------------------------------------------------------------------- references
def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=1e-8)


def _former_zoom(query: Any, support: Any, *, top_clips: int, top_patches: int, levels: tuple[str, ...],
                 patch_logits: torch.Tensor | None = None) -> Zoom:
    """The former vectorised zoom_in: cues normalised here, every picked clip pair's [L·P, L·P] block gathered.

    query / support: anything with fields patches, global_, clips, clip_frames (raw or unit: normalising is
    idempotent up to rounding).
    """
    scores: dict[str, torch.Tensor] = {}
    if "g" in levels:
        scores["g"] = _unit(query.global_) @ _unit(support.global_).transpose(-1, -2)
    if "t" not in levels and "s" not in levels:
        return Zoom(scores, None, None)
    sim = torch.einsum("eqid,esjd->eqsij", _unit(query.clips), _unit(support.clips))
    best, partner = sim.max(dim=-1)
    values, clips = best.topk(min(top_clips, best.shape[-1]), dim=-1)
    partners = partner.gather(-1, clips)
    if "t" in levels:
        scores["t"] = values.mean(dim=-1)
    if "s" in levels:
        q_frames, s_frames = query.clip_frames[clips], support.clip_frames[partners]
        e, q, t1, p1, d = query.patches.shape
        s, t2, p2 = support.patches.shape[1:4]
        cos = _unit(query.patches).reshape(e, -1, d) @ _unit(support.patches).reshape(e, -1, d).transpose(1, 2)
        cos = cos.view(e, q, t1, p1, s, t2, p2).permute(0, 1, 4, 2, 5, 3, 6)
        top, length = q_frames.shape[-2:]
        pair = (q_frames[..., :, None] * t2 + s_frames[..., None, :]).reshape(e, q, s, -1)
        blocks = gather_frames(cos.reshape(e, q, s, t1 * t2, p1, p2), pair)
        blocks = blocks.view(e, q, s, top, length, length, p1, p2).permute(0, 1, 2, 3, 4, 6, 5, 7)
        block = blocks.reshape(e, q, s, top, length * p1, length * p2)
        best_patch = block.max(dim=-1).values
        kept, index = best_patch.topk(min(top_patches, best_patch.shape[-1]), dim=-1)
        if patch_logits is not None:
            picked = gather_frames(patch_logits, q_frames.flatten(-2))
            kept = kept * semantic_attention(picked.view(*q_frames.shape[:-1], -1)).gather(-1, index)
        scores["s"] = kept.mean(dim=(-2, -1))
    return Zoom(scores, clips, partners)


def _plain_phi(query: Encoded, support: Encoded, top_clips: int, top_patches: int,
               patch_logits: torch.Tensor | None) -> torch.Tensor:
    """Φ_g + Φ_t + Φ_s (Eq. 2-6) of every pair [E, Q, S], one pair, clip and patch at a time (float64)."""
    e, nq = query.global_.shape[:2]
    ns = support.global_.shape[1]
    frames = query.clip_frames.tolist()
    out = torch.zeros(e, nq, ns, dtype=torch.float64)
    for a, i, j in itertools.product(range(e), range(nq), range(ns)):
        cos = functools.partial(F.cosine_similarity, dim=-1, eps=1e-8)
        phi_g = cos(query.global_[a, i].double(), support.global_[a, j].double())
        clip_sim = cos(query.clips[a, i].double()[:, None], support.clips[a, j].double()[None])  # [N1, N2]
        best, partner = clip_sim.max(dim=1)
        picked = sorted(range(len(best)), key=lambda c: -float(best[c]))[:top_clips]
        phi_t = best[picked].mean()
        phi_s = 0.0
        for c in picked:
            mine = torch.cat([query.patches[a, i, f] for f in frames[c]]).double()  # [L·P, D]
            theirs = torch.cat([support.patches[a, j, f] for f in frames[int(partner[c])]]).double()
            g = cos(mine[:, None], theirs[None]).max(dim=1).values  # each patch's best partner patch
            alpha = torch.ones_like(g)
            if patch_logits is not None:
                alpha = len(g) * torch.cat([patch_logits[a, i, j, f] for f in frames[c]]).double().softmax(0)
            keep = sorted(range(len(g)), key=lambda n: -float(g[n]))[:top_patches]
            phi_s += float((alpha[keep] * g[keep]).mean()) / len(picked)
        out[a, i, j] = phi_g + phi_t + phi_s
    return out


def _encoded(gen: torch.Generator, lead: tuple[int, int], t: int, p: int, length: int) -> Encoded:
    patches = torch.randn(*lead, t, p, D, generator=gen)
    tuples = hcl.clip_tuples(t, length)
    clips = torch.randn(*lead, len(tuples), D, generator=gen)
    return Encoded(patches, patches.mean(-2), patches.mean((-3, -2)), clips, tuples)


def _head(**fields: Any) -> HCLHead:
    torch.manual_seed(0)
    head = HCLHead({"rgb": D}, 4, HCLConfig(heads=2, mlp_ratio=2, top_clips=3, top_patches=3, **fields))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the spatial table is made on the first patches seen; then spread the weights
        head.encode(torch.randn(1, 1, 4, 4, D, generator=gen))
        for param in head.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=gen))
    return head


def _episode(seed: int, e: int = 2, way: int = 3, shot: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q, s = torch.randn(e, way, 4, 4, D, generator=gen), torch.randn(e, way * shot, 4, 4, D, generator=gen)
    labels = torch.stack([torch.randperm(way * shot, generator=gen) % way for _ in range(e)])
    return q, s, labels


# ----------------------------------------------------------------------------- matching
@pytest.mark.parametrize(("t", "p", "length", "top_clips", "top_patches", "attention"),
                         [(4, 4, 2, 3, 5, False), (5, 1, 3, 2, 2, True), (3, 9, 1, 9, 4, True),
                          (8, 4, 2, 10, 10, False)])
def test_zoom_in_equals_eq_2_to_6_pair_by_pair(t, p, length, top_clips, top_patches, attention) -> None:
    gen = torch.Generator().manual_seed(20 + t)
    query, support = _encoded(gen, (2, 3), t, p, length), _encoded(gen, (2, 4), t, p, length)
    logits = torch.randn(2, 3, 4, t, p, generator=gen) if attention else None
    zoom = zoom_in(normalized_cues(query), normalized_cues(support), top_clips=top_clips, top_patches=top_patches,
                   levels=("g", "t", "s"), patch_logits=logits)
    phi = zoom.scores["g"] + zoom.scores["t"] + zoom.scores["s"]
    expected = _plain_phi(query, support, top_clips, top_patches, logits)
    torch.testing.assert_close(phi.double(), expected, rtol=1e-5, atol=1e-5)
    former = _former_zoom(query, support, top_clips=top_clips, top_patches=top_patches, levels=("g", "t", "s"),
                          patch_logits=logits)
    assert zoom.clips is not None and zoom.partners is not None
    torch.testing.assert_close(zoom.clips, former.clips)
    torch.testing.assert_close(zoom.partners, former.partners)


@pytest.mark.parametrize("text_encoder", ["none", "minilm"])
def test_forward_and_its_gradients_equal_the_former_matching_of_raw_cues(text_encoder: str) -> None:
    q, s, labels = _episode(30)
    head = _head(text_encoder=text_encoder, text_dim=5, dropout=0.0)
    text = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(31)) if text_encoder == "minilm" else None
    weights = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(32))

    def grads(fn: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
        head.zero_grad()
        out = fn()
        (out * weights).sum().backward()
        return out.detach(), [p.grad.clone() for p in head.parameters() if p.grad is not None]

    def former() -> torch.Tensor:  # the former forward: no per-video normalisation, logits of raw patches
        eq, es = head.encode(q), head.encode(s)
        logits = head.patch_logits(eq.patches, labels, text)
        zoom = _former_zoom(eq, es, top_clips=3, top_patches=3, levels=("g", "t", "s"), patch_logits=logits)
        return shot_mean(functools.reduce(torch.add, zoom.scores.values()), labels, 3)

    out, new_grads = grads(lambda: head({"rgb": q}, {"rgb": s}, labels, 3, class_text=text))
    ref, ref_grads = grads(former)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert len(new_grads) == len(ref_grads) > 0
    for new, old in zip(new_grads, ref_grads, strict=True):
        torch.testing.assert_close(new, old, rtol=1e-4, atol=1e-6)


def test_episode_and_batch_losses_equal_the_former_matching(monkeypatch: pytest.MonkeyPatch) -> None:
    q, s, labels = _episode(40)
    gen = torch.Generator().manual_seed(41)
    videos, video_labels = torch.randn(12, 4, 4, D, generator=gen), torch.arange(6).repeat_interleave(2)
    batch_text = torch.randn(6, 5, generator=gen)
    text = torch.randn(2, 3, 5, generator=gen)
    head = _head(text_encoder="minilm", text_dim=5, dropout=0.0)

    def run() -> tuple[list[float], list[torch.Tensor]]:
        head.zero_grad()
        ce, _ = head.loss({"rgb": q}, {"rgb": s}, labels, 3, episode_targets(3, 1, 2), class_text=text)
        extra, parts = head.batch_loss({"rgb": videos}, video_labels, class_text=batch_text)
        (ce + extra).backward()
        return [float(ce.detach()), *parts.values()], [p.grad.clone() for p in head.parameters() if p.grad is not None]

    values, new_grads = run()
    monkeypatch.setattr(hcl, "zoom_in", _former_zoom)
    monkeypatch.setattr(hcl.HCLHead, "encode_videos", lambda self, v: _raw_codes(self, v))
    ref_values, ref_grads = run()
    assert values == pytest.approx(ref_values, rel=1e-5, abs=1e-6)
    for new, old in zip(new_grads, ref_grads, strict=True):
        torch.testing.assert_close(new, old, rtol=1e-4, atol=1e-6)


def _raw_codes(head: HCLHead, videos: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The former (unnormalised) codes: patch norms 1, so the logits read the raw patches."""
    enc = head.encode(videos["rgb"])
    return {"patches": enc.patches, "global": enc.global_, "clips": enc.clips,
            "patch_norms": torch.ones(enc.patches.shape[:-1])}


def test_codes_are_unit_vectors_with_the_patch_norms() -> None:
    head = _head(text_encoder="minilm", text_dim=5).eval()
    videos = torch.randn(1, 3, 4, 4, D, generator=torch.Generator().manual_seed(50))
    with torch.no_grad():
        codes, enc = head.encode_videos({"rgb": videos}), head.encode(videos)
    for name in ("patches", "global", "clips"):
        torch.testing.assert_close(codes[name].norm(dim=-1), torch.ones(codes[name].shape[:-1]))
    torch.testing.assert_close(codes["patches"] * codes["patch_norms"][..., None], enc.patches)
    assert "patch_norms" not in _head(text_encoder="none").encode_videos({"rgb": videos})
