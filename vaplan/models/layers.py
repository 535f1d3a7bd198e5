"""Attention pieces shared by the MGN and MM-Pyramid backbones. Shapes: B batch, N queries,
S keys, h heads, d model width."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def split_heads(x: Tensor, h: int) -> Tensor:
    """(B, N, d) -> (B, h, N, d/h)."""
    B, N, d = x.shape
    return x.reshape(B, N, h, d // h).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, h, N, d/h) -> (B, N, d)."""
    B, h, N, c = x.shape
    return x.transpose(1, 2).reshape(B, N, h * c)


def attend(q: Tensor, k: Tensor, v: Tensor, drop: nn.Module, band: int | None = None) -> Tensor:
    """softmax(q k^T / sqrt(d/h)) v per head, (B, h, N, d/h) -> (B, N, d); with `band`, query t
    sees only keys |t - s| <= band (the others get -1e9 before the softmax)."""
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # (B, h, N, S)
    if band is not None:
        t = torch.arange(q.shape[2], device=q.device)
        s = torch.arange(k.shape[2], device=q.device)
        scores = scores.masked_fill((t[:, None] - s[None, :]).abs() > band, -1e9)
    return merge_heads(drop(scores.softmax(dim=-1)) @ v)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections and an output projection `proj`;
    dropout on the attention weights and on the output; optional band (see `attend`)."""

    def __init__(self, d: int, heads: int, attn_dropout: float = 0.0, out_dropout: float = 0.0,
                 band: int | None = None) -> None:
        super().__init__()
        self.heads, self.band = heads, band
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.out_drop = nn.Dropout(out_dropout)

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        """query (B, N, d), key = value (B, S, d) -> (B, N, d)."""
        q, k, v = (split_heads(p(x), self.heads) for p, x in
                   ((self.q_proj, query), (self.k_proj, key), (self.v_proj, key)))
        return self.out_drop(self.proj(attend(q, k, v, self.attn_drop, self.band)))
