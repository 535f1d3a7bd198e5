"""AVEL's weakly-supervised audio-guided attention network (Tian et al., ECCV 2018; docs/ave.md).

Per 1-s segment: the audio feature a_t (128-d VGGish) attends over the 7x7 grid of visual
features v_t (VGG-19 pool5, 512-d) — z = w_h^T tanh(W_v relu(U_v v) + W_g relu(U_a a)),
alpha = softmax(z) over the 49 positions, c_t = sum alpha v (the raw features, not the
projections). Two bidirectional LSTMs run over the 10 audio features and the 10 attended visual
features; their outputs are concatenated, passed through ReLU, a 64-unit layer and a 29-way
layer (28 events + background) to segment scores. Weak supervision: the video-level prediction
is the softmax of the scores max-pooled over time (MIL), trained with a multi-label soft-margin
loss against the video's label. At test time each segment's class is the argmax of its scores.
Defaults are the reference's `att_Net(128, 128, 512, 29)`.

The contract every AVE model (`vaplan.ave.build_ave_model`: AVEL, PSP, CMBS) keeps: forward
(audio (B, 10, 128), visual (B, 10, 7, 7, 512)) -> `AveOutput`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from vaplan.data.ave import NUM_AVE_CLASSES, NUM_AVE_SEGMENTS

AUDIO_DIM, VISUAL_DIM, GRID = 128, 512, 49  # VGGish, VGG-19 pool5 channels, 7 x 7 positions
NUM_OUTPUTS = NUM_AVE_CLASSES + 1  # 28 events + background


class AveOutput(NamedTuple):
    """What an AVE model returns (shapes: B videos, T = 10 segments, K = 29 classes).

    video_probs: (B, K) the video-level prediction the model's weak loss is fitted to.
    segment_scores: (B, T, K) per-segment scores; argmax per segment is the prediction.
    plg_scores: (B, T, K) logits the PLG segment cross-entropy is applied to (the segment
      scores, except for CMBS, whose segment scores repeat one video-level vector; docs/ave.md).
    """

    video_probs: torch.Tensor
    segment_scores: torch.Tensor
    plg_scores: torch.Tensor


def check_inputs(name: str, audio: torch.Tensor, visual: torch.Tensor) -> None:
    """Refuse inputs other than AVE's official feature shapes."""
    if audio.shape[1:] != (NUM_AVE_SEGMENTS, AUDIO_DIM) or visual.shape[1:] != (
            NUM_AVE_SEGMENTS, 7, 7, VISUAL_DIM):
        raise ValueError(f"{name} expects audio (B, 10, 128) and visual (B, 10, 7, 7, 512), "
                         f"got {tuple(audio.shape)} and {tuple(visual.shape)}")


class AudioGuidedAttention(nn.Module):
    """AVEL's audio-guided visual attention (AVGA; PSP reuses it unchanged)."""

    def __init__(self, attention_dim: int = 512):
        super().__init__()
        self.audio_proj = nn.Linear(AUDIO_DIM, attention_dim)  # U_a
        self.visual_proj = nn.Linear(VISUAL_DIM, attention_dim)  # U_v
        self.visual_att = nn.Linear(attention_dim, GRID, bias=False)  # W_v
        self.audio_att = nn.Linear(attention_dim, GRID, bias=False)  # W_g
        self.att_score = nn.Linear(GRID, 1, bias=False)  # w_h
        for layer in (self.audio_proj, self.visual_proj, self.visual_att, self.audio_att,
                      self.att_score):
            nn.init.xavier_uniform_(layer.weight)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 128), (B, T, 7, 7, 512) -> attended visual (B, T, 512) and weights (B, T, 49)."""
        batch, steps = audio.shape[:2]
        grid = visual.reshape(batch * steps, GRID, VISUAL_DIM)  # (BT, 49, 512)
        keys = F.relu(self.visual_proj(grid))  # (BT, 49, D)
        query = F.relu(self.audio_proj(audio.reshape(batch * steps, AUDIO_DIM)))  # (BT, D)
        content = self.visual_att(keys) + self.audio_att(query).unsqueeze(2)  # (BT, 49, 49)
        alpha = torch.softmax(self.att_score(torch.tanh(content)).squeeze(2), dim=-1)  # (BT, 49)
        attended = torch.bmm(alpha.unsqueeze(1), grid).squeeze(1)  # (BT, 512)
        return attended.reshape(batch, steps, VISUAL_DIM), alpha.reshape(batch, steps, GRID)


class AVELWeak(nn.Module):
    """Audio-guided visual attention + two BiLSTMs -> segment scores over 29 classes."""

    def __init__(self, lstm_dim: int = 128, attention_dim: int = 512, classifier_dim: int = 64,
                 num_classes: int = NUM_OUTPUTS):
        super().__init__()
        self.attention = AudioGuidedAttention(attention_dim)
        self.audio_lstm = nn.LSTM(AUDIO_DIM, lstm_dim, batch_first=True, bidirectional=True)
        self.visual_lstm = nn.LSTM(VISUAL_DIM, lstm_dim, batch_first=True, bidirectional=True)
        self.hidden = nn.Linear(4 * lstm_dim, classifier_dim)
        self.classifier = nn.Linear(classifier_dim, num_classes)
        for layer in (self.hidden, self.classifier):
            nn.init.xavier_uniform_(layer.weight)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> AveOutput:
        """-> video probabilities (B, 29) (softmax of time-max-pooled scores) and segment scores
        (B, T, 29) (logits; argmax per segment is the prediction; also the PLG scores)."""
        check_inputs("AVEL", audio, visual)
        attended, _ = self.attention(audio, visual)
        audio_seq, _ = self.audio_lstm(audio)  # (B, T, 2H)
        visual_seq, _ = self.visual_lstm(attended)  # (B, T, 2H)
        joint = F.relu(torch.cat((audio_seq, visual_seq), dim=-1))  # (B, T, 4H)
        scores = self.classifier(F.relu(self.hidden(joint)))  # (B, T, 29)
        video = torch.softmax(scores.max(dim=1).values, dim=-1)  # (B, 29)
        return AveOutput(video, scores, scores)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters. AVELWeak, PSPWeak and CMBSWeak hold only parameters their forward
    pass uses, so this is the references' used-parameter count (docs/ave.md)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
