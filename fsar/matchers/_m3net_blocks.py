"""Encoders and the learned matching function of M3Net (Tang et al., ACM MM 2023); used by :mod:`.m3net`.

- :class:`IntraFrameEncoder` (IFCE, Eq. 1): patch self-attention with a learned position embedding and
  a residual weight α, then a three-layer MLP with a residual, on every frame's n×n patches.
- :class:`FrameMixing` (IVCE, Eq. 2): token perception over the t frames (shared by the d channels),
  then channel perception over the d channels (shared by the frames), both residual two-layer MLPs,
  after adding a learned temporal position embedding.
- :class:`IntraEpisodeEncoder` (IECE): the same token/channel mixing over the l videos of a set
  (:class:`SetMixing`, no position embedding), its output used as meta weights of a learnable
  convolution over every video's frames.
- :func:`dtw_path_mean` (I-M as printed, Sec. 3.4.1): the three-move DTW recursion, then the mean cost over
  the path it finds.
- :class:`CrossReconstruction` (C-M, Sec. 3.4.2): query-centred prototype reconstruction and
  prototype-centred query reconstruction by cross-attention, D₂ = D(s→q) + D(q→s).

See the module docstring of :mod:`fsar.matchers.m3net` for the choices the paper leaves open.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fsar.matchers.trx import class_slots

__all__ = ["CrossReconstruction", "FrameMixing", "IntraEpisodeEncoder", "IntraFrameEncoder", "SetMixing",
           "dtw_path_mean", "resample_grid"]


def resample_grid(position: torch.Tensor, patches: int) -> torch.Tensor:
    """A learned [n, n, D] patch position embedding on the √P × √P grid of the features: [P, D].

    Bilinear (align_corners=False), as ViT position embeddings are resized; from n = 4 to a 2 × 2 grid
    this is the mean of each 2 × 2 block. P must be a square.
    """
    side = math.isqrt(patches)
    if side * side != patches:
        raise ValueError(f"m3net needs a square patch grid (P = n*n), got P = {patches}")
    if side == position.shape[0]:
        return position.flatten(0, 1)
    grid = position.permute(2, 0, 1)[None]  # [1, D, n, n]
    resized = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False)
    return resized[0].flatten(1).T


class IntraFrameEncoder(nn.Module):
    """IFCE (Eq. 1): Ẑ = α·softmax(Z W_Q (Z W_K)ᵀ/√d) Z W_V + Z, Z = [f¹…f^{n²}] + P; f' = MLP(Ẑ) + Ẑ.

    [..., P, D] patches of one frame -> [..., P, D]. W_Q, W_K, W_V ∈ R^{d×d} (no bias, as written);
    the MLP is Linear-ReLU-Linear-ReLU-Linear with ``hidden`` units.
    """

    def __init__(self, dim: int, grid: int, hidden: int) -> None:
        super().__init__()
        if grid < 1 or hidden < 1:
            raise ValueError(f"patch grid and MLP width must be >= 1, got {grid} and {hidden}")
        self.position = nn.Parameter(torch.empty(grid, grid, dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, dim))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        z = patches + resample_grid(self.position, patches.shape[-2]).to(patches.dtype)
        scores = self.query(z) @ self.key(z).transpose(-1, -2) / math.sqrt(z.shape[-1])
        attended = self.alpha * (scores.softmax(dim=-1) @ self.value(z)) + z
        return self.mlp(attended) + attended


class FrameMixing(nn.Module):
    """IVCE (Eq. 2) on [..., t, D] frames (+ a learned [t, D] position embedding) -> [..., t, D].

    Û = ReLU(Vᵀ W_t1) W_t2 + Vᵀ (token perception, W_t ∈ R^{t×t}, shared by the d channels), then
    V' = ReLU(Ûᵀ W_c1) W_c2 + Ûᵀ (channel perception, W_c ∈ R^{d×d}, shared by the frames); V = frames + P.
    """

    def __init__(self, dim: int, frames: int) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.empty(frames, dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.token = nn.Sequential(nn.Linear(frames, frames), nn.ReLU(), nn.Linear(frames, frames))
        self.channel = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.shape[-2] != self.position.shape[0]:
            raise ValueError(f"IVCE was built for T = {self.position.shape[0]} frames, got {frames.shape[-2]}")
        v = (frames + self.position.to(frames.dtype)).transpose(-1, -2)  # [..., D, t]
        mixed = (self.token(v) + v).transpose(-1, -2)  # [..., t, D]
        return self.channel(mixed) + mixed


class SetMixing(nn.Module):
    """Video-mixing block of IECE: Eq. 2's token/channel mixing over a *set* of l video tokens.

    [..., l, D] -> [..., l, D], permutation-equivariant in l and defined for any l. Eq. 2's token layer is
    an l×l matrix; the l×l matrices that commute with every permutation are exactly a·I + (b/l)·11ᵀ
    (DeepSets, Zaheer et al. 2017), so each token layer is x_i ↦ a·x_i + b·mean_j x_j + c, with ``hidden``
    such maps in the first layer (hidden width hidden·l, the analogue of W_t1) summed by the second.
    The channel layer is Eq. 2's, W_c1, W_c2 ∈ R^{d×d}. No position embedding (the paper: videos have
    no order).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"IECE token hidden multiplicity must be >= 1, got {hidden}")
        bound = 1.0 / math.sqrt(hidden)
        # Rows a, b, c of layer 1; c starts at 0 so that the ReLU is not dead for all tokens at the start.
        self.first = nn.Parameter(torch.cat([torch.empty(2, hidden).uniform_(-1.0, 1.0), torch.zeros(1, hidden)]))
        self.second = nn.Parameter(torch.empty(2, hidden).uniform_(-bound, bound))  # a, b of layer 2
        self.second_bias = nn.Parameter(torch.zeros(()))
        self.channel = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Token perception with residual: [..., l, D] -> [..., l, D]."""
        a1, b1, c1 = (w.view(-1, 1, 1) for w in self.first)
        a2, b2 = (w.view(-1, 1, 1) for w in self.second)
        h = torch.relu(a1 * x[..., None, :, :] + b1 * x.mean(dim=-2, keepdim=True)[..., None, :, :] + c1)
        out = (a2 * h + b2 * h.mean(dim=-2, keepdim=True)).sum(dim=-3) + self.second_bias
        return out + x

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        mixed = self.tokens(videos)
        return self.channel(mixed) + mixed


class IntraEpisodeEncoder(nn.Module):
    """IECE: task-specific frames of every video of a set. [..., l, t, D] -> [..., l, t, D].

    Ê_i = mean_t E_i (the video token), M = SetMixing(Ê) (the meta weights), and each video's frames go
    through a learnable 1-D convolution over time whose kernel is modulated per input channel by its
    meta weights: F_i = E_i + Conv(σ(M_i) ⊙ E_i). Equivariant to the order of the l videos.
    """

    def __init__(self, dim: int, token_hidden: int, kernel: int) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"IECE convolution kernel must be odd and >= 1, got {kernel}")
        self.mixing = SetMixing(dim, token_hidden)
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        meta = torch.sigmoid(self.mixing(frames.mean(dim=-2)))  # [..., l, D]
        gated = (frames * meta[..., None, :]).flatten(0, -3).transpose(1, 2)  # [B, D, t]
        return frames + self.conv(gated).transpose(1, 2).reshape(frames.shape)


def _lexicographic_min(candidates: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise least (cost, length) pair: least cost, and among equal costs the fewest cells."""
    best_cost, best_length = candidates[0]
    for cost, length in candidates[1:]:
        better = (cost < best_cost) | ((cost == best_cost) & (length < best_length))
        best_cost, best_length = torch.where(better, cost, best_cost), torch.where(better, length, best_length)
    return best_cost, best_length


def dtw_path_mean(cost: torch.Tensor) -> torch.Tensor:
    """I-M as Sec. 3.4.1 prints it: D(x, y) = M(x, y) + min{D(x−1, y−1), D(x−1, y), D(x, y−1)} from (1, 1)
    to (t, t), then the mean of M over the path of that minimum cumulative cost. (..., n, m) -> (...).

    The path is the one of least *summed* cost (what the recursion finds), averaged afterwards; it is not
    the path of least mean cost. Paths of equal cost but different lengths have different means; the
    paper does not say which it takes, and this takes the shortest (fewest cells). Comparing (cost,
    length) pairs lexicographically keeps the recursion exact, since both add along a path. The moves
    are symmetric, so the value of Mᵀ is that of M. Gradients reach the cells of the chosen path
    (1/length each), as for any hard minimum; the paper prints no relaxation.
    """
    if cost.dim() < 2 or cost.shape[-1] < 1 or cost.shape[-2] < 1:
        raise ValueError(f"cost must be (..., n, m) with n, m >= 1, got {tuple(cost.shape)}")
    n, m = cost.shape[-2], cost.shape[-1]
    zero = cost.new_zeros(cost.shape[:-2])
    # Cells are kept in Python lists (not written in place) so autograd sees a plain graph.
    prev: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i in range(n):
        row: list[tuple[torch.Tensor, torch.Tensor]] = []
        for j in range(m):
            before = ([prev[j - 1]] if i and j else []) + ([prev[j]] if i else []) + ([row[j - 1]] if j else [])
            total, length = _lexicographic_min(before) if before else (zero, zero)
            row.append((cost[..., i, j] + total, length + 1.0))
        prev = row
    total, length = prev[m - 1]
    return total / length


def _norm(squared: torch.Tensor) -> torch.Tensor:
    """√ of summed squares, floored at 1e-12 so that a zero distance has a finite gradient."""
    return squared.clamp_min(1e-12).sqrt()


class CrossReconstruction(nn.Module):
    """C-M, category-specific matching (Sec. 3.4.2): D₂_c = D(s→q)_c + D(q→s)_c per query and class.

    With x^Q = x W_Q, x^K = x W_K, x^V = x W_V (W ∈ R^{d×d_k}, shared by both directions), the class
    prototype V_c = all frames of class c's supports stacked (K_c·t rows) and a query V_j (t rows):

    - query-centred: V̂_c = softmax(V_j^Q (V_c^K)ᵀ/√d_k) V_c^V, D(q→s)_c = ‖V_j^V − V̂_c‖_F;
    - prototype-centred: V̂_j = softmax(V_c^Q (V_j^K)ᵀ/√d_k) V_j^V,
      D(s→q)_c = ‖V_c^V − V̂_j‖_F / √K_c (the norm runs over K_c·t rows; dividing by √K_c keeps classes
      with different shot counts comparable, and is the literal norm for one shot).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"C-M key dimension must be >= 1, got {hidden}")
        self.query = nn.Linear(dim, hidden, bias=False)
        self.key = nn.Linear(dim, hidden, bias=False)
        self.value = nn.Linear(dim, hidden, bias=False)

    def forward(self, query: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor,
                way: int) -> torch.Tensor:
        """query [E, Q, t, D], support [E, S, t, D], support_labels [E, S] -> D₂ [E, Q, way] float32."""
        scale = 1.0 / math.sqrt(self.query.out_features)
        qq, qk, qv = (f(query).float() for f in (self.query, self.key, self.value))
        index, valid = class_slots(support_labels, way)  # [E, W, K]
        episodes = torch.arange(index.shape[0], device=index.device)[:, None, None]
        sq, sk, sv = (f(support).float()[episodes, index] for f in (self.query, self.key, self.value))
        # Query-centred: every query frame attends over the K·t frames of each class (padded slots masked).
        scores = torch.einsum("eqth,ewksh->eqtwks", qq, sk) * scale
        scores = scores.masked_fill(~valid[:, None, None, :, :, None], float("-inf"))
        attention = scores.flatten(-2).softmax(dim=-1)
        prototype = torch.einsum("eqtwn,ewnh->eqtwh", attention, sv.flatten(2, 3))
        query_to_support = _norm((qv[:, :, :, None] - prototype).square().sum(dim=(2, 4)))
        # Prototype-centred: every class frame attends over the t frames of the query.
        back = (torch.einsum("ewksh,eqth->eqwkst", sq, qk) * scale).softmax(dim=-1)
        recon = torch.einsum("eqwkst,eqth->eqwksh", back, qv)
        per_shot = (sv[:, None] - recon).square().sum(dim=(-1, -2))  # [E, Q, W, K]
        counts = valid.sum(dim=-1).to(per_shot.dtype)  # [E, W]
        support_to_query = _norm((per_shot * valid[:, None]).sum(dim=-1) / counts[:, None])
        return support_to_query + query_to_support
