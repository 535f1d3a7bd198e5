"""PSP, positive sample propagation, weakly-supervised variant (Zhou et al., CVPR 2021;
docs/ave.md).

The reference is jasongief/PSP_CVPR_2021 `weakly_model.py` (`psp_net(128, 512, 128, 29)`,
threshold 0.095 from its README). Per video:

1. AVEL's audio-guided attention (`AudioGuidedAttention`) pools each segment's 7x7 grid to one
   512-d visual vector; a linear layer maps it to 128-d.
2. Two BiLSTMs (hidden 128) give audio a and visual v sequences, (B, T, 256) each.
3. PSP: two ReLU branches per modality (bias-free 256 -> 256, dropout 0.1). The segment
   similarity beta_va = relu(v2 a1^T / sqrt(256)) (B, T, T) and its transpose beta_av are
   row-normalised; entries <= the threshold are pruned (gamma). Positive samples propagate:
   v' = LayerNorm(v + gamma_va a2), a' = LayerNorm(a + gamma_av v1) (one shared LayerNorm),
   fused = (v' + a') / 2.
4. Classifier: relu(256 -> 64) -> 29 (bias-free) gives segment scores s; a temporal weight
   sigmoid(relu(w^T s)) (29 -> 1, bias-free) rescales each segment's scores.
5. Weak head: the video prediction is the softmax of the time-*averaged* weighted scores, fitted
   with BCE to the video label (recipe `AVE_RECIPES["psp"]`, video_loss "bce").

At test time each segment's class is the argmax of its weighted scores (the reference takes the
argmax of their softmax, the same class). The reference's unused parameters (`temperature`,
`W1`, `W2`, the unused `AudioSelfAttention` class) are not built.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from vaplan.ave.avel import (AUDIO_DIM, NUM_OUTPUTS, VISUAL_DIM, AudioGuidedAttention, AveOutput,
                             check_inputs)

PSP_THRESHOLD = 0.095  # the README's weakly-supervised command line (--threshold=0.095)


class PositiveSamplePropagation(nn.Module):
    """PSP block: (B, T, D) audio and visual sequences -> fused (B, T, D)."""

    def __init__(self, dim: int = 256, threshold: float = PSP_THRESHOLD, dropout: float = 0.1):
        super().__init__()
        self.threshold = threshold
        self.visual_1 = nn.Linear(dim, dim, bias=False)
        self.visual_2 = nn.Linear(dim, dim, bias=False)
        self.audio_1 = nn.Linear(dim, dim, bias=False)
        self.audio_2 = nn.Linear(dim, dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        for layer in (self.visual_1, self.visual_2, self.audio_1, self.audio_2):
            nn.init.xavier_uniform_(layer.weight)

    def branch(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(F.relu(layer(x)))

    def prune(self, similarity: torch.Tensor) -> torch.Tensor:
        """Row-normalise a (B, T, T) non-negative similarity and zero entries <= the threshold."""
        weights = similarity / (similarity.sum(dim=-1, keepdim=True) + 1e-8)
        return weights * (weights > self.threshold).to(weights.dtype)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        v1, v2 = self.branch(self.visual_1, visual), self.branch(self.visual_2, visual)  # (B, T, D)
        a1, a2 = self.branch(self.audio_1, audio), self.branch(self.audio_2, audio)
        beta_va = F.relu(torch.bmm(v2, a1.transpose(1, 2)) / math.sqrt(v2.shape[-1]))  # (B, T, T)
        gamma_va, gamma_av = self.prune(beta_va), self.prune(beta_va.transpose(1, 2))
        visual_psp = self.norm(visual + torch.bmm(gamma_va, a2))
        audio_psp = self.norm(audio + torch.bmm(gamma_av, v1))
        return (visual_psp + audio_psp) / 2


class PSPWeak(nn.Module):
    """AVGA + BiLSTMs + PSP + temporally weighted classifier -> segment scores over 29 classes."""

    def __init__(self, hidden_dim: int = 128, attention_dim: int = 512, classifier_dim: int = 64,
                 threshold: float = PSP_THRESHOLD, num_classes: int = NUM_OUTPUTS):
        super().__init__()
        self.attention = AudioGuidedAttention(attention_dim)
        self.visual_proj = nn.Linear(VISUAL_DIM, AUDIO_DIM)  # reference linear_v: 512 -> a_dim
        self.audio_lstm = nn.LSTM(AUDIO_DIM, hidden_dim, batch_first=True, bidirectional=True)
        self.visual_lstm = nn.LSTM(AUDIO_DIM, hidden_dim, batch_first=True, bidirectional=True)
        self.psp = PositiveSamplePropagation(2 * hidden_dim, threshold)
        self.hidden = nn.Linear(2 * hidden_dim, classifier_dim, bias=False)
        self.classifier = nn.Linear(classifier_dim, num_classes, bias=False)
        self.temporal_weight = nn.Linear(num_classes, 1, bias=False)  # default init, as W3
        for layer in (self.hidden, self.classifier):
            nn.init.xavier_uniform_(layer.weight)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> AveOutput:
        """-> video probabilities (B, 29) (softmax of time-averaged scores) and weighted segment
        scores (B, T, 29) (argmax per segment is the prediction; also the PLG scores)."""
        check_inputs("PSP", audio, visual)
        attended, _ = self.attention(audio, visual)  # (B, T, 512)
        audio_seq, _ = self.audio_lstm(audio)  # (B, T, 2H)
        visual_seq, _ = self.visual_lstm(self.visual_proj(attended))  # (B, T, 2H)
        fused = self.psp(audio_seq, visual_seq)  # (B, T, 2H)
        scores = self.classifier(F.relu(self.hidden(fused)))  # (B, T, 29)
        weight = torch.sigmoid(F.relu(self.temporal_weight(scores)))  # (B, T, 1), in [0.5, 1)
        scores = scores * weight
        video = torch.softmax(scores.mean(dim=1), dim=-1)  # (B, 29)
        return AveOutput(video, scores, scores)
