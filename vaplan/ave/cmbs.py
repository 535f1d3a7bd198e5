"""CMBS, cross-modal background suppression, weakly-supervised variant (Xia & Zhao, CVPR 2022;
docs/ave.md).

The reference is marmot-xy/CMBS `model/main_model.py` (`weak_main_model`, configs/weak.json:
d_model 256, alpha 0.2, gamma 0.5, beta 0.5). Sequences are (B, T, D) here (batch first).

1. Visual: a ReLU layer 512 -> 512 (dropout 0.1) on every grid cell, then the audio-guided
   spatial-channel attention (`SpatialChannelAttention`) pools the 7x7 grid to (B, T, 512).
2. Encoders (linear to 256 + two post-norm transformer layers, 4 heads, FFN 2048) give audio and
   visual key/value sequences; decoders (linear to 256 + one cross-attention layer, 4 heads,
   FFN 1024, attending over [memory; query]) let each modality query the other.
3. Background suppression: gate_a = sigmoid(w^T visual_kv), gate_v = sigmoid(w^T audio_kv);
   q_v <- (1 - alpha) q_v + alpha gate_a q_v (and q_a with gate_v); av_gate = (gate_a + gate_v)/2.
   Per-modality class activations cas_v, cas_a = linear(256 -> 29) of q_v, q_a.
4. Audio-visual interaction (`AudioVisualInteraction`, 2 heads) on q_v then q_a; fused = mean.
5. Class activation sequence cas = W fused (bias-free 256 -> 29), suppressed per class:
   cas <- gamma sigmoid(cas_v) cas + gamma sigmoid(cas_a) cas (B, T, 29). The video logits are
   the mean of the top-4 segments per class (B, 29); fused logits av_gate * video logits
   (B, T, 29); the video prediction is the softmax of their time-max, fitted with the multi-label
   soft margin loss.

Evaluation in the reference (`weakly_main.compute_accuracy_supervised`): a segment is an event
where sigmoid(av_gate) > 0.5 — av_gate is already a sigmoid average, so always — and its class
is the argmax of the video logits. The segment scores returned here (av_gate * video logits,
av_gate > 0) have exactly that argmax on every segment. The PLG segment objective is applied to
the class activation sequence `cas`, CMBS's only per-segment class scores (docs/ave.md).
The reference's unused parameters (`ave_bottleneck`, the encoder/decoder layer templates that
are deep-copied, the decoders' unused self-attention, `classifier`) are not built.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from vaplan.ave.avel import AUDIO_DIM, GRID, NUM_OUTPUTS, VISUAL_DIM, AveOutput, check_inputs

TOP_K = 4  # segments averaged per class into the video logits


class SpatialChannelAttention(nn.Module):
    """CMBS's audio-guided attention (the reference's `New_Audio_Guided_Attention`):
    (B, T, 7, 7, C) visual (C = visual_dim, 512), (B, T, 128) audio -> (B, T, C).

    Visual self-attention over the grid (query/key 512 -> 128), its self-pooled vector; audio-
    guided channel attention (x (1 + sigmoid)) then audio-guided spatial attention on the raw
    features; out = c + beta sigmoid(self-pooled) c."""

    def __init__(self, beta: float = 0.5, visual_dim: int = VISUAL_DIM, hidden_dim: int = 256,
                 latent: int = 4, dropout: float = 0.2):
        super().__init__()
        self.beta, self.visual_dim = beta, visual_dim
        self.query = nn.Linear(visual_dim, visual_dim // latent)
        self.key = nn.Linear(visual_dim, visual_dim // latent)
        self.value = nn.Linear(visual_dim, visual_dim)
        self.norm = nn.LayerNorm(visual_dim)
        self.dropout = nn.Dropout(dropout)
        self.self_mean = nn.Linear(visual_dim, hidden_dim)  # affine_video_ave
        self.self_cells = nn.Linear(visual_dim, hidden_dim)  # affine_video_3
        self.self_score = nn.Linear(hidden_dim, 1)  # ave_v_att
        self.channel_visual = nn.Linear(visual_dim, visual_dim)  # affine_video_1
        self.channel_audio = nn.Linear(AUDIO_DIM, visual_dim)  # affine_audio_1
        self.channel_bottleneck = nn.Linear(visual_dim, hidden_dim)
        self.channel_score = nn.Linear(hidden_dim, visual_dim)  # affine_v_c_att
        self.spatial_visual = nn.Linear(visual_dim, hidden_dim)  # affine_video_2
        self.spatial_audio = nn.Linear(AUDIO_DIM, hidden_dim)  # affine_audio_2
        self.spatial_score = nn.Linear(hidden_dim, 1)  # affine_v_s_att

    @staticmethod
    def pool(scores: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """(N, 49, 1) scores, (N, 49, C) cells -> (N, C): softmax(tanh(scores)) over the grid."""
        weights = torch.softmax(torch.tanh(scores).transpose(1, 2), dim=-1)  # (N, 1, 49)
        return torch.bmm(weights, cells).squeeze(1)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        batch, steps = audio.shape[:2]
        raw = visual.reshape(batch * steps, GRID, self.visual_dim)  # (N, 49, 512), N = BT
        sound = audio.reshape(batch * steps, AUDIO_DIM)  # (N, 128)
        energy = torch.bmm(self.query(raw), self.key(raw).transpose(1, 2))  # (N, 49, 49)
        cells = self.norm(raw + self.dropout(torch.bmm(torch.softmax(energy, -1), self.value(raw))))
        mean = F.relu(self.self_mean(cells.mean(dim=1))).unsqueeze(1)  # (N, 1, 256)
        self_pooled = self.pool(self.self_score(F.relu(self.self_cells(cells)) * mean), cells)
        joint = (F.relu(self.channel_audio(sound)).unsqueeze(1)
                 * F.relu(self.channel_visual(cells))).mean(dim=1)  # (N, 512)
        channel = torch.sigmoid(self.channel_score(F.relu(self.channel_bottleneck(joint))))
        attended = raw * (channel.unsqueeze(1) + 1)  # (N, 49, 512)
        spatial = (F.relu(self.spatial_visual(attended))
                   * F.relu(self.spatial_audio(sound)).unsqueeze(1))  # (N, 49, 256)
        pooled = self.pool(self.spatial_score(spatial), attended)  # (N, 512)
        pooled = pooled + self.beta * torch.sigmoid(self_pooled) * pooled
        return pooled.reshape(batch, steps, self.visual_dim)


class Encoder(nn.Module):
    """Linear to d_model + post-norm transformer layers (self-attention within one modality)."""

    def __init__(self, input_dim: int, d_model: int, ffn_dim: int, layers: int = 2,
                 heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(input_dim, d_model)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(
            d_model, heads, ffn_dim, dropout, batch_first=True) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class CrossDecoder(nn.Module):
    """Linear to d_model + one cross-attention layer: the query attends over [memory; query],
    then add & norm, FFN, add & norm (the reference's DecoderLayer without its unused
    self-attention)."""

    def __init__(self, input_dim: int, d_model: int, ffn_dim: int, heads: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(input_dim, d_model)
        self.attention = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, d_model))
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        query = self.proj(query)  # (B, T, D)
        memory = torch.cat((memory, query), dim=1)  # (B, 2T, D)
        x = self.norm1(query + self.dropout1(self.attention(query, memory, memory)[0]))
        return self.norm2(x + self.dropout2(self.ffn(x)))


class AudioVisualInteraction(nn.Module):
    """x * y attends over [y; x]; add & norm (the reference's AudioVideoInter)."""

    def __init__(self, d_model: int, heads: int = 2, head_dropout: float = 0.2,
                 dropout: float = 0.1):
        super().__init__()
        self.attention = nn.MultiheadAttention(d_model, heads, dropout=head_dropout,
                                               batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        joint = x * y  # (B, T, D)
        memory = torch.cat((y, x), dim=1)  # (B, 2T, D)
        return self.norm(joint + self.dropout(self.attention(joint, memory, memory)[0]))


class CMBSWeak(nn.Module):
    """CMBS weak model; the defaults are the reference's configs/weak.json widths (smaller
    widths only keep tests fast: visual_dim is the width after the visual layer, 512 = the
    features' channels in the reference, attention_dim the attention's hidden width)."""

    def __init__(self, d_model: int = 256, alpha: float = 0.2, gamma: float = 0.5,
                 beta: float = 0.5, encoder_ffn: int = 2048, decoder_ffn: int = 1024,
                 visual_dim: int = VISUAL_DIM, attention_dim: int = 256,
                 num_classes: int = NUM_OUTPUTS):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma
        self.visual_fc = nn.Linear(VISUAL_DIM, visual_dim)
        self.dropout = nn.Dropout(0.1)
        self.spatial_channel = SpatialChannelAttention(beta, visual_dim, attention_dim)
        self.visual_encoder = Encoder(visual_dim, d_model, encoder_ffn)
        self.audio_encoder = Encoder(AUDIO_DIM, d_model, encoder_ffn)
        self.visual_decoder = CrossDecoder(visual_dim, d_model, decoder_ffn)
        self.audio_decoder = CrossDecoder(AUDIO_DIM, d_model, decoder_ffn)
        self.audio_gate = nn.Linear(d_model, 1)  # reads the visual key/value sequence
        self.visual_gate = nn.Linear(d_model, 1)  # reads the audio key/value sequence
        self.visual_cas = nn.Linear(d_model, num_classes)
        self.audio_cas = nn.Linear(d_model, num_classes)
        self.av_interaction = AudioVisualInteraction(d_model)
        self.va_interaction = AudioVisualInteraction(d_model)
        self.cas = nn.Linear(d_model, num_classes, bias=False)  # the reference's 1x1 Conv1d

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> AveOutput:
        """-> video probabilities (B, 29), segment scores av_gate * video logits (B, T, 29)
        (every segment's argmax is the video logits' argmax, as the reference evaluates) and
        the class activation sequence (B, T, 29) (the PLG scores)."""
        check_inputs("CMBS", audio, visual)
        cells = self.dropout(F.relu(self.visual_fc(visual)))  # (B, T, 7, 7, 512)
        visual_seq = self.spatial_channel(cells, audio)  # (B, T, visual_dim)
        visual_kv = self.visual_encoder(visual_seq)  # (B, T, D)
        audio_query = self.audio_decoder(audio, visual_kv)
        audio_kv = self.audio_encoder(audio)
        visual_query = self.visual_decoder(visual_seq, audio_kv)
        gate_a = torch.sigmoid(self.audio_gate(visual_kv))  # (B, T, 1)
        gate_v = torch.sigmoid(self.visual_gate(audio_kv))
        av_gate = (gate_a + gate_v) / 2
        visual_query = (1 - self.alpha) * visual_query + self.alpha * gate_a * visual_query
        audio_query = (1 - self.alpha) * audio_query + self.alpha * gate_v * audio_query
        visual_cas = torch.sigmoid(self.visual_cas(visual_query))  # (B, T, 29)
        audio_cas = torch.sigmoid(self.audio_cas(audio_query))
        visual_query = self.av_interaction(visual_query, audio_query)
        audio_query = self.va_interaction(audio_query, visual_query)
        cas = self.cas((visual_query + audio_query) / 2)  # (B, T, 29)
        cas = self.gamma * visual_cas * cas + self.gamma * audio_cas * cas
        video_logits = cas.topk(TOP_K, dim=1).values.mean(dim=1)  # (B, 29)
        segment_scores = av_gate * video_logits.unsqueeze(1)  # (B, T, 29)
        video = torch.softmax(segment_scores.max(dim=1).values, dim=-1)  # (B, 29)
        return AveOutput(video, segment_scores, cas)
