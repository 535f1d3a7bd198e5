"""MM-Pyramid: Multimodal Pyramid Attentional Network (Yu et al., ACM MM 2022; reference
JustinYuu/MM_Pyramid, main_network.py, nets/MPAM.py, nets/Transformer.py), written from the
reference's forward pass.

Shapes: B videos, T=10 segments, C=25 classes, d=hidden_dim (512), L=levels (4).

    audio, visual -> the shared input embedding (fc_a; fc_v, fc_st, fc_fusion) -> a, v (B,T,d)
    semantic capture, for level l = 0..L-1 (dilation 2^l):
        attention block: a_sa = SelfAttn_a(a), v_sa = SelfAttn_v(v), a_ca = CrossAttn(a, v),
          v_ca = CrossAttn(v, a) (one layer, both directions), all banded to |t - t'| <= 2^l;
          a <- sigmoid(W1[a_sa; a_ca]) * a_sa + sigmoid(W2[a_sa; a_ca]) * a_ca  (same for v)
        temporal block: x <- ReLU(x + Conv1x1(ReLU(Conv3(x, dilation 2^l))))   per modality
        keep a_l, v_l                                            -> (B*T, L, d) per modality
    semantic fusion, per segment over the L levels: x = SelfAttn(x); w = sigmoid(Linear(x))
        (B*T, L, 1); out = sum_l w_l x_l                         -> a, v (B,T,d)
    head: HAN's attentive MMIL pooling on [a; v] (B,T,2,d)

Each attention layer is pre-norm on the query only: q + drop(MHA(LN q, k, v)); + drop(FFN(LN q)).
Deviation (docs/backbones.md): the reference stacks [v; a] and reads index 0 as audio; here the
audio stream is index 0 (audio), as in HAN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaplan.config import ModelConfig
from vaplan.models.han import HANOutput, add_mmil_head, attentive_mmil_pooling
from vaplan.models.inputs import FeatureInputs
from vaplan.models.layers import MultiHeadAttention

ATTENTION_DROPOUT = 0.1  # on the attention weights (the reference MultiHeadAttention default)


class AttentionLayer(nn.Module):
    """q <- q + drop(Attn(LN q, kv)); q <- q + drop(FFN(LN q)), FFN = W2 drop(ReLU(W1 x))."""

    def __init__(self, d: int, heads: int, ffn_dim: int, dropout: float,
                 band: int | None) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d, heads, attn_dropout=ATTENTION_DROPOUT, band=band)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.linear1 = nn.Linear(d, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, query: Tensor, other: Tensor) -> Tensor:
        """query (B, N, d), other (B, S, d) the key/value (query itself for self-attention)."""
        x = query + self.drop(self.attn(self.norm1(query), other))
        ffn = self.linear2(self.drop(F.relu(self.linear1(self.norm2(x)))))
        return x + self.drop(ffn)


class GatedAttentionBlock(nn.Module):
    """Self-attention per modality + one shared cross-attention, fused by two sigmoid gates."""

    def __init__(self, d: int, heads: int, ffn_dim: int, dropout: float, band: int) -> None:
        super().__init__()
        self.self_audio = AttentionLayer(d, heads, ffn_dim, dropout, band)
        self.self_visual = AttentionLayer(d, heads, ffn_dim, dropout, band)
        self.cross = AttentionLayer(d, heads, ffn_dim, dropout, band)
        self.gate_audio = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(2))
        self.gate_visual = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(2))

    @staticmethod
    def _fuse(gates: nn.ModuleList, own: Tensor, cross: Tensor) -> Tensor:
        both = torch.cat([own, cross], dim=-1)  # (B, T, 2d)
        return torch.sigmoid(gates[0](both)) * own + torch.sigmoid(gates[1](both)) * cross

    def forward(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        """audio, visual (B, T, d) -> (B, T, d) each."""
        a_sa = self.self_audio(audio, audio)
        v_sa = self.self_visual(visual, visual)
        a_ca = self.cross(audio, visual)
        v_ca = self.cross(visual, audio)
        return self._fuse(self.gate_audio, a_sa, a_ca), self._fuse(self.gate_visual, v_sa, v_ca)


class TemporalBlock(nn.Module):
    """ReLU(x + Conv1x1(ReLU(Conv_k3(x, dilation)))) over time; (B, T, d) -> (B, T, d)."""

    def __init__(self, d: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(d, d, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(d, d, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = x.transpose(1, 2)  # (B, d, T)
        y = self.conv2(F.relu(self.conv1(y)))
        return F.relu(x + y.transpose(1, 2))


class LevelFusion(nn.Module):
    """Self-attention across the L levels of each segment, then a sigmoid-weighted sum."""

    def __init__(self, d: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = AttentionLayer(d, heads, ffn_dim, dropout, band=None)
        self.weight = nn.Linear(d, 1)

    def forward(self, levels: Tensor) -> Tensor:
        """levels (B, T, L, d) -> (B, T, d)."""
        B, T, L, d = levels.shape
        x = levels.reshape(B * T, L, d)
        x = self.attn(x, x)  # (B*T, L, d)
        w = torch.sigmoid(self.weight(x))  # (B*T, L, 1)
        return (x * w).sum(dim=1).reshape(B, T, d)


class MMPyramid(FeatureInputs):
    """`MMPyramid(MODEL_PRESETS["mm_pyramid"])` is the published configuration."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else ModelConfig(name="mm_pyramid")
        d, h, f, p = cfg.hidden_dim, cfg.num_heads, cfg.ffn_dim, cfg.dropout
        self.build_inputs(cfg, d)
        dilations = [2 ** level for level in range(cfg.levels)]
        self.attention = nn.ModuleList(GatedAttentionBlock(d, h, f, p, band=r) for r in dilations)
        self.tcn_audio = nn.ModuleList(TemporalBlock(d, r) for r in dilations)
        self.tcn_visual = nn.ModuleList(TemporalBlock(d, r) for r in dilations)
        self.fuse_audio = LevelFusion(d, h, f, p)
        self.fuse_visual = LevelFusion(d, h, f, p)
        add_mmil_head(self, d, cfg.num_classes)

    def forward(self, audio: Tensor, visual: Tensor,
                visual_3d: Tensor | None = None) -> HANOutput:
        """audio (B,T,Da), visual (B,80,Dv) or (B,T,Dv), visual_3d (B,T,D3) -> HANOutput."""
        a, v = self.embed(audio, visual, visual_3d)  # (B, T, d) each
        a_levels, v_levels = [], []
        for block, tcn_a, tcn_v in zip(self.attention, self.tcn_audio, self.tcn_visual):
            a, v = block(a, v)
            a, v = tcn_a(a), tcn_v(v)  # (B, T, d)
            a_levels.append(a)
            v_levels.append(v)
        a = self.fuse_audio(torch.stack(a_levels, dim=2))  # (B, T, L, d) -> (B, T, d)
        v = self.fuse_visual(torch.stack(v_levels, dim=2))
        x = torch.stack([a, v], dim=2)  # (B, T, 2, d), index 0 audio
        return attentive_mmil_pooling(self, x)
