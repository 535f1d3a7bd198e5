"""The HAN backbone (Tian et al. 2020, "Unified Multisensory Perception", net_audiovisual.py).

Shapes: B videos, T=10 segments, C=25 classes, F=8 ResNet frames per segment, d=512.

    audio (B,T,Da) --fc_a--> (B,T,d) -+
                                      +--> hybrid attention (one shared layer) --> (B,T,2,d)
    visual (B,T*F or T,Dv) --pool, fc_v--> (B,T,d) -+  (concat with fc_st(3D), fc_fusion)

then per segment and modality: sigmoid(fc_prob) probabilities, a temporal attention (softmax over
T) and a modality attention (softmax over the 2 modalities) that pool them into video-level and
modality-level probabilities. Only the layers the published model uses are built (the official
file also builds unused encoders).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaplan.config import ModelConfig
from vaplan.models.inputs import FeatureInputs


class HANOutput(NamedTuple):
    """Probabilities from one forward pass (index 0 of the modality axis is audio, 1 visual).

    Every backbone returns this type; losses, PLD and evaluation read video, audio, visual and
    seg. The two attention maps are HAN's (docs/backbones.md says what the others return).
    """

    video: Tensor  # (B, C) p_video = sum_t sum_m modality_att * temporal_att * prob
    audio: Tensor  # (B, C) p_a = sum_t temporal_att[:, :, 0] * prob[:, :, 0]
    visual: Tensor  # (B, C) p_v = sum_t temporal_att[:, :, 1] * prob[:, :, 1]
    seg: Tensor  # (B, T, 2, C) segment probabilities P^a, P^v
    temporal_att: Tensor  # (B, T, 2, C) softmax over T
    modality_att: Tensor  # (B, T, 2, C) softmax over the 2 modalities


class HybridAttentionLayer(nn.Module):
    """q <- LN(q + drop(CrossAttn(q, kv)) + drop(SelfAttn(q))); q <- LN(q + drop(FFN(q)))."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout,
                                               batch_first=True)
        self.cm_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout,
                                             batch_first=True)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout_cross = nn.Dropout(dropout)
        self.dropout_self = nn.Dropout(dropout)
        self.dropout_ffn = nn.Dropout(dropout)  # inside the FFN, after ReLU
        self.dropout_out = nn.Dropout(dropout)  # on the FFN output

    def forward(self, query: Tensor, other: Tensor) -> Tensor:
        """query, other: (B, T, d) -> (B, T, d); `other` is the cross-modal key/value."""
        cross = self.cm_attn(query, other, other, need_weights=False)[0]  # (B, T, d)
        self_ = self.self_attn(query, query, query, need_weights=False)[0]  # (B, T, d)
        x = self.norm1(query + self.dropout_cross(cross) + self.dropout_self(self_))
        ffn = self.linear2(self.dropout_ffn(F.relu(self.linear1(x))))  # (B, T, d)
        return self.norm2(x + self.dropout_out(ffn))


def add_mmil_head(module: nn.Module, d: int, num_classes: int) -> None:
    """HAN's head layers on `module` (the official names): fc_prob, fc_frame_att, fc_av_att."""
    module.fc_prob = nn.Linear(d, num_classes)
    module.fc_frame_att = nn.Linear(d, num_classes)
    module.fc_av_att = nn.Linear(d, num_classes)


def attentive_mmil_pooling(module: nn.Module, x: Tensor) -> HANOutput:
    """HAN's head (`add_mmil_head`) on x (B, T, 2, d), modality 0 audio: segment probabilities
    pooled over T by a temporal attention and over the modalities by a modality attention
    (MM-Pyramid uses the same head)."""
    prob = torch.sigmoid(module.fc_prob(x))  # (B, T, 2, C)
    temporal_att = torch.softmax(module.fc_frame_att(x), dim=1)  # (B, T, 2, C) over T
    modality_att = torch.softmax(module.fc_av_att(x), dim=2)  # (B, T, 2, C) over modalities
    temporal_prob = temporal_att * prob  # (B, T, 2, C)
    video = (temporal_prob * modality_att).sum(dim=2).sum(dim=1)  # (B, C)
    audio_prob = temporal_prob[:, :, 0].sum(dim=1)  # (B, C)
    visual_prob = temporal_prob[:, :, 1].sum(dim=1)  # (B, C)
    return HANOutput(video, audio_prob, visual_prob, prob, temporal_att, modality_att)


class HAN(FeatureInputs):
    """Hybrid attention network; `HAN()` is the published configuration (docs/fidelity.md)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else ModelConfig()
        d = cfg.hidden_dim
        self.build_inputs(cfg, d)
        # Applied to (audio, visual) and to (visual, audio) with the same weights.
        self.hybrid_attention = HybridAttentionLayer(d, cfg.num_heads, cfg.ffn_dim, cfg.dropout)
        add_mmil_head(self, d, cfg.num_classes)

    def forward(self, audio: Tensor, visual: Tensor,
                visual_3d: Tensor | None = None) -> HANOutput:
        """audio (B,T,Da), visual (B,80,Dv) or (B,T,Dv), visual_3d (B,T,D3) -> HANOutput."""
        a, v = self.embed(audio, visual, visual_3d)  # (B, T, d) each
        a_out = self.hybrid_attention(a, v)  # (B, T, d)
        v_out = self.hybrid_attention(v, a)  # (B, T, d)
        x = torch.stack([a_out, v_out], dim=2)  # (B, T, 2, d)
        return attentive_mmil_pooling(self, x)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
