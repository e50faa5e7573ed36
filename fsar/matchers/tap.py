"""Temporal Alignment Prediction (TAP): a learned soft alignment between every pair of frames.

Paper: "Temporal Alignment Prediction for Few-Shot Video Classification" (arXiv preprint,
2021), the few-shot video version, not the later ICLR 2022 paper on sequence classification.
For a query video A and a support video B (frame features as columns, Eq. 2):

- Eq. 10, temporal message passing: X = g_α(A), Y = g_α(B), g_α a one-layer BiLSTM (hidden 1024 per
  direction, forward and backward outputs concatenated, so D_g = 2048);
- Eq. 11, alignment prediction: P_ij = h_β(concat(X_i, Y_j)), h_β fully connected layers with output
  sizes 1024, 256, 64, 1 and a final sigmoid;
- Eq. 12, learned similarity: S_ij = n(X_i)ᵀ n(Y_j), n(x) = x / ‖x‖₂ (cosine);
- Eq. 13, video similarity: s(A, B) = Σ_ij P_ij S_ij;
- Eq. 14, class score: c(A, D_i) = mean of s(A, B) over the supports B of class i;
- Eq. 15, loss: negative log-likelihood of softmax_i c(A, D_i), i.e. cross-entropy over the logits c
  (the base class :meth:`Head.loss`).

Choices where the paper is silent (named here so they can be revisited):

- X = g_α(A) exactly as Eq. 10 writes it: the BiLSTM output *replaces* the frame features, with no
  residual connection to the input and no projection back to D_f.
- The activation between the fully connected layers of h_β is not given; ReLU is used. No dropout.
- Initialisation is not given; PyTorch's defaults for LSTM and Linear are used.
- No temperature or scaling on c: Eq. 15 applies the softmax to the mean similarities directly
  (so the logits lie in [-T², T²]).
- The query is the first argument of h_β (concat(X_query_i, Y_support_j)); h_β is not symmetric and
  the paper writes s(V, V_j) with the query V first (Eq. 14).
- The paper clips the gradient norm (40) of the backbone and the BiLSTM only; :class:`TrainDefaults`
  has one clip for all parameters, so here h_β is clipped too.
- Learning-rate decay: Sec. 5.2 multiplies the rate by 0.1 every 200 epochs but never says how many
  episodes an epoch holds. fsar counts its schedules in training episodes and reads an epoch as its
  trainer's (``--episodes-per-epoch``, 1,000 by default): a decay every 200 x 1,000 = 200,000
  episodes. The paper gives no total either; since its schedule decays, it runs at least to the first
  decay, so ``budget`` is that lower bound, 200,000 episodes (``fsar train``'s default 10 x 1,000
  never reaches it).

Per video and per episode (:meth:`TAPHead.encode_videos` / :meth:`TAPHead.match`): the BiLSTM g_α reads
one video at a time, so X = g_α(A) is per video; the alignment h_β and the similarity of every
(query, support) frame pair are per episode.

h_β's first layer acts on a concatenation, so W [x; y] + b = W_a x + W_b y + b: it is computed once
per frame (T per video) and broadcast over the T x T frame pairs of every (query, support) pair,
instead of per pair. The layers after the first ReLU still run on every frame pair: about
Q·S·T²·(1024·256 + 256·64) multiply-adds per episode (6.3 G for 5-way 1-shot, 75 queries, T = 8), and
a [Q, S, T, T, 1024] activation, which is why ``eval_pairs`` is lowered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fsar.matchers.head import Features, Head, TrainDefaults, VideoCodes, paper, shot_mean, single_stream
from fsar.matchers.registry import register

__all__ = ["TAPConfig", "TAPHead"]


# An epoch of fsar's trainer (TrainConfig.episodes_per_epoch's default), the unit the paper's schedule is read in;
# the matchers cannot import the runner, so a test holds the two equal.
_EPOCH = 1_000
_DECAY_EVERY = 200 * _EPOCH


@dataclass(frozen=True)
class TAPConfig:
    """TAP hyperparameters (all the paper's, Sec. 5.2)."""

    # per direction; the BiLSTM output has 2 * lstm_hidden features
    lstm_hidden: int = paper(1024, "Sec. 5.2: BiLSTM hidden size 1024")
    lstm_layers: int = paper(1, "Sec. 5.2: one BiLSTM layer")
    # hidden sizes of h_β; a final layer of size 1 follows
    align_sizes: tuple[int, ...] = paper((1024, 256, 64), "Sec. 5.2: h_β output sizes 1024, 256, 64, 1")


@register(
    "tap",
    kind="learned",
    paper="Temporal Alignment Prediction for Few-Shot Video Classification, arXiv preprint, 2021",
)
class TAPHead(Head):
    """TAP: BiLSTM message passing, predicted frame alignment P times cosine S, summed (Eqs. 10-15).

    forward: query {m: [E, Q, T, D]}, support {m: [E, S, T, D]}, support_labels [E, S] -> [E, Q, way]
    (mean over each class's supports of s = Σ_ij P_ij S_ij).
    """

    Config = TAPConfig
    defaults = TrainDefaults(
        optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=1e-4, clip_norm=40.0, tasks_per_step=1,
        lr_decay_every=_DECAY_EVERY, lr_decay=0.1, budget=_DECAY_EVERY,
        origins={
            "optimizer": "paper: Sec. 5.2 (SGD)",
            "lr": "paper: Sec. 5.2 (start learning rate 0.001)",
            "momentum": "paper: Sec. 5.2",
            "weight_decay": "paper: Sec. 5.2",
            "clip_norm": "paper: Sec. 5.2 (maximum norm 40; the paper clips the backbone and the BiLSTM, "
                         "fsar every parameter, h_β too)",
            "tasks_per_step": "fsar: the paper does not say how many episodes make one step; one",
            "lr_decay_every": "fsar: Sec. 5.2 decays every 200 epochs without sizing an epoch; 200 of fsar's "
                              "1,000-episode epochs (--episodes-per-epoch default)",
            "lr_decay": "paper: Sec. 5.2 (x 0.1)",
            "budget": "fsar: the paper gives no total; its schedule runs at least to the first decay, "
                      "200 epochs = 200,000 episodes",
        },
    )
    # The first hidden layer of h_β is [Q*S, T, T, 1024] floats per episode (256 KiB per pair at T = 8).
    eval_pairs = 1024

    def __init__(self, dims: Mapping[str, int], frames: int, config: TAPConfig | None = None) -> None:
        super().__init__(dims, frames, config)
        cfg: TAPConfig = self.config
        if len(self.dims) != 1:
            raise ValueError(f"TAP reads one modality, got {sorted(self.dims)}")
        if not cfg.align_sizes:
            raise ValueError("align_sizes needs at least one hidden layer")
        (d_in,) = self.dims.values()
        self.lstm = nn.LSTM(d_in, cfg.lstm_hidden, num_layers=cfg.lstm_layers, batch_first=True,
                            bidirectional=True)
        self.out_dim = 2 * cfg.lstm_hidden
        sizes = (2 * self.out_dim, *cfg.align_sizes)
        layers: list[nn.Module] = []
        for d_prev, d_next in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(d_prev, d_next), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], 1))
        # h_β as it would be applied to concat(X_i, Y_j); the forward splits its first layer.
        self.align = nn.Sequential(*layers)

    def message_passing(self, frames: torch.Tensor) -> torch.Tensor:
        """g_α (Eq. 10) on every video independently: [..., T, D] -> [..., T, 2 * lstm_hidden]."""
        lead = frames.shape[:-2]
        out, _ = self.lstm(frames.reshape(-1, *frames.shape[-2:]))
        return out.reshape(*lead, out.shape[-2], self.out_dim)

    def alignment(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """P of Eq. 11 for every (query, support) pair, with h_β's first layer split per frame.

        x: [E, Q, T, Dg] query BiLSTM outputs, y: [E, S, T, Dg] support outputs -> [E, Q, S, T, T] in (0, 1),
        P[e, q, s, i, j] = sigmoid(h_β(concat(x[e, q, i], y[e, s, j]))).
        """
        first = self.align[0]
        assert isinstance(first, nn.Linear)
        w_query, w_support = first.weight.split(self.out_dim, dim=1)
        a = x @ w_query.T  # [E, Q, T, H1]
        b = y @ w_support.T + first.bias  # [E, S, T, H1]
        hidden = a[:, :, None, :, None, :] + b[:, None, :, None, :, :]  # [E, Q, S, T, T, H1]
        return torch.sigmoid(self.align[1:](hidden).squeeze(-1))

    def pair_similarity(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """s(V_q, V_s) of Eq. 13 for every pair: [E, Q, T, D] x [E, S, T, D] -> [E, Q, S]."""
        # One BiLSTM call for all videos of the episodes: g_α sees each video on its own either way.
        x, y = self.message_passing(torch.cat([query, support], dim=1)).split([query.shape[1], support.shape[1]], 1)
        return self.aligned_similarity(x, y)

    def aligned_similarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Σ_ij P_ij S_ij (Eq. 11-13) of BiLSTM outputs: [E, Q, T, Dg] x [E, S, T, Dg] -> [E, Q, S]."""
        p = self.alignment(x, y)
        s = torch.einsum("eqid,esjd->eqsij", F.normalize(x, dim=-1), F.normalize(y, dim=-1))  # Eq. 12
        return (p * s).sum(dim=(-2, -1))

    def encode_videos(self, videos: Features) -> VideoCodes:
        """The per-video part, g_α (Eq. 10): {m: [E, N, T, D]} -> {"x": [E, N, T, 2 * lstm_hidden]}."""
        return {"x": self.message_passing(single_stream(videos))}

    def match(self, query: VideoCodes, support: VideoCodes, support_labels: torch.Tensor, way: int,
              **_: object) -> torch.Tensor:
        """The per-episode part: alignment P and similarity S of every pair (Eq. 11-14) -> [E, Q, way]."""
        return shot_mean(self.aligned_similarity(query["x"], support["x"]), support_labels, way)

    def forward(self, query: Features, support: Features, support_labels: torch.Tensor,
                way: int) -> torch.Tensor:
        """Class scores c of Eq. 14 (softmax inputs of Eq. 15): [E, Q, way]."""
        return self.match(*self.encode_pair(query, support), support_labels, way)
