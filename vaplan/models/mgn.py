"""MGN: Multi-modal Grouping Network (Mo & Tian, NeurIPS 2022; reference stoneMo/MGN,
nets/mgn.py and nets/grouping.py), written from the reference's forward pass.

Shapes: B videos, T=10 segments, C=25 classes (= group tokens), d=hidden_dim (128 published).

    audio  -> fc_a                    -> a0 (B,T,d)
    visual -> pool, fc_v (+fc_st, fc_fusion) -> v0 (B,T,d)
    visual class-aware grouping: [v0; visual_token] -> depth_visual blocks -> group T segments
        into C class groups                                  -> xv (B,C,d), assignment (B,C,T)
    audio class-aware grouping:  [a0; audio_token]  -> depth_audio blocks -> regroup the audio
        segments around v0 (a hard Gumbel assignment, the reference's `han_encoder`) -> group
        into C class groups                                  -> xa (B,C,d), assignment (B,C,T)
    cross-modal grouping: [xa; xv] -> depth_av blocks -> group the audio half into C groups
                                                             -> x (B,C,d)

    p_video = sigmoid(fc_prob(x)), p_a = sigmoid(fc_prob_a(xa)), p_v = sigmoid(fc_prob_v(xv))
    segment probability P^m[t, c] = p_m[c] * (1 + softmax_t(assignment_m[c, t]))  (clamped to 1)

and the recipe's extra loss: cross-entropy of fc_cls on each class token against its class.
Deviations (docs/backbones.md): P^m is clamped to [0, 1] (the reference's can reach 2 p_m,
thresholded at 0.5 only); `temporal_att` is softmax_t(assignment) and `modality_att` is 1/2
(MGN has no modality attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaplan.config import ModelConfig
from vaplan.models.han import HANOutput
from vaplan.models.inputs import FeatureInputs
from vaplan.models.layers import MultiHeadAttention, attend, split_heads

GROUP_MLP_RATIO = 0.5  # token-mixing MLP width of a grouping block, x d (reference (0.5, 4.0))
ASSIGN_EPS = 1.0  # the reference's assign_eps (assignment row normaliser)


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample with probability p (training)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (the reference's AttnBlock)."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, N, d) -> (B, N, d)."""
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.drop(self.proj(attend(q, k, v, self.drop)))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + DropPath(SelfAttn(LN x)); x + DropPath(MLP(LN x))."""

    def __init__(self, d: int, heads: int, ffn_dim: int, dropout: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = SelfAttention(d, heads, dropout)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = Mlp(d, ffn_dim, d, dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossAttentionBlock(nn.Module):
    """Post-norm cross attention: x = q + Attn(q, k); x = x + MLP(LN x); LN(x)."""

    def __init__(self, d: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d, heads, dropout, dropout)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = Mlp(d, ffn_dim, d, dropout)
        self.norm_post = nn.LayerNorm(d)

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        x = query + self.attn(query, key)
        return self.norm_post(x + self.mlp(self.norm2(x)))


def hard_assign(logits: Tensor, dim: int, gumbel: bool) -> Tensor:
    """One-hot argmax along `dim` with the softmax's gradient (straight-through); with Gumbel
    noise when `gumbel` (training)."""
    if gumbel:
        noise = -torch.empty_like(logits).exponential_().log()  # ~ Gumbel(0, 1)
        logits = logits + noise
    soft = logits.softmax(dim)
    hard = torch.zeros_like(soft).scatter_(dim, soft.argmax(dim, keepdim=True), 1.0)
    return hard - soft.detach() + soft


class GroupAssignment(nn.Module):
    """Assign the N inputs to the G groups (one head): logits q(groups) k(inputs)^T / sqrt(d),
    normalised over the groups (soft: softmax; hard: straight-through one-hot, Gumbel noise in
    training); each group takes the row-normalised (sum + 1) weighted mean of v(inputs)."""

    def __init__(self, d: int, hard: bool) -> None:
        super().__init__()
        self.hard = hard
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)

    def forward(self, groups: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """groups (B, G, d), x (B, N, d) -> (new groups (B, G, d), logits (B, G, N))."""
        logits = self.q_proj(groups) @ self.k_proj(x).transpose(-2, -1)  # (B, G, N)
        logits = logits * groups.shape[-1] ** -0.5
        if self.hard:
            attn = hard_assign(logits, dim=-2, gumbel=self.training)
        else:
            attn = logits.softmax(dim=-2)  # (B, G, N) over groups
        attn = attn / (attn.sum(dim=-1, keepdim=True) + ASSIGN_EPS)
        return self.proj(attn @ self.v_proj(x)), logits


class GroupingBlock(nn.Module):
    """Group N input tokens into G output groups from S group tokens (GroupViT-style).

    tokens' = LN(MLP_tokens(LN tokens)) mixes S tokens into G; tokens' = CrossAttn(tokens', LN x);
    groups = tokens' + Assign(tokens', LN x); out = groups + MLP(LN groups).
    """

    def __init__(self, d: int, heads: int, ffn_dim: int, num_tokens: int, num_groups: int,
                 hard: bool, dropout: float) -> None:
        super().__init__()
        self.norm_tokens = nn.LayerNorm(d)
        self.mlp_inter = Mlp(num_tokens, int(GROUP_MLP_RATIO * d), num_groups)
        self.norm_post_tokens = nn.LayerNorm(d)
        self.norm_x = nn.LayerNorm(d)
        self.pre_assign_attn = CrossAttentionBlock(d, heads, ffn_dim, dropout)
        self.assign = GroupAssignment(d, hard)
        self.norm_new_x = nn.LayerNorm(d)
        self.mlp_channels = Mlp(d, ffn_dim, d)

    def forward(self, x: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, N, d), tokens (B, S, d) -> (groups (B, G, d), assignment logits (B, G, N))."""
        tokens = self.norm_tokens(tokens)
        x = self.norm_x(x)
        mixed = self.mlp_inter(tokens.transpose(1, 2)).transpose(1, 2)  # (B, G, d)
        mixed = self.pre_assign_attn(self.norm_post_tokens(mixed), x)  # (B, G, d)
        assigned, logits = self.assign(mixed, x)
        groups = assigned + mixed  # (B, G, d)
        return groups + self.mlp_channels(self.norm_new_x(groups)), logits


class ModalityGrouping(nn.Module):
    """[x; tokens] -> `depth` transformer blocks -> (optionally regroup x around `other`'s T
    segments, hard) -> group x into G groups from the tokens (soft)."""

    def __init__(self, cfg: ModelConfig, depth: int, num_tokens: int, with_other: bool) -> None:
        super().__init__()
        d, h, f, p = cfg.hidden_dim, cfg.num_heads, cfg.ffn_dim, cfg.dropout
        self.blocks = nn.ModuleList(TransformerBlock(d, h, f, p, cfg.drop_path)
                                    for _ in range(depth))
        T = cfg.num_segments
        self.other = GroupingBlock(d, h, f, T, T, hard=True, dropout=p) if with_other else None
        self.grouping = GroupingBlock(d, h, f, num_tokens, cfg.num_classes, hard=False,
                                      dropout=p)

    def forward(self, x: Tensor, tokens: Tensor,
                other: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, N, d), tokens (S, d) or (B, S, d), other (B, T, d) -> ((B, G, d), (B, G, N))."""
        tokens = tokens.expand(x.shape[0], -1, -1)  # (B, S, d)
        n = x.shape[1]
        joint = torch.cat([x, tokens], dim=1)  # (B, N + S, d)
        for block in self.blocks:
            joint = block(joint)
        x, tokens = joint[:, :n], joint[:, n:]
        if self.other is not None and other is not None:
            x = self.other(x, other)[0]  # (B, T, d): x's segments regrouped around `other`'s
        return self.grouping(x, tokens)


class MGN(FeatureInputs):
    """Multi-modal grouping network; `MGN(MODEL_PRESETS["mgn"])` is the published configuration."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else ModelConfig(name="mgn")
        d, C = cfg.hidden_dim, cfg.num_classes
        self.build_inputs(cfg, d)
        self.audio_token = nn.Parameter(torch.zeros(C, d))  # class tokens, zero-initialised
        self.visual_token = nn.Parameter(torch.zeros(C, d))
        self.audio_grouping = ModalityGrouping(cfg, cfg.audio_depth, C, with_other=True)
        self.visual_grouping = ModalityGrouping(cfg, cfg.visual_depth, C, with_other=False)
        self.av_grouping = ModalityGrouping(cfg, cfg.av_depth, C, with_other=False)
        self.fc_prob = nn.Linear(d, 1)
        self.fc_prob_a = nn.Linear(d, 1)
        self.fc_prob_v = nn.Linear(d, 1)
        self.fc_cls = nn.Linear(d, C)
        self.apply(_init_weights)

    def forward(self, audio: Tensor, visual: Tensor,
                visual_3d: Tensor | None = None) -> HANOutput:
        """audio (B,T,Da), visual (B,80,Dv) or (B,T,Dv), visual_3d (B,T,D3) -> HANOutput."""
        a0, v0 = self.embed(audio, visual, visual_3d)  # (B, T, d) each
        xv, logits_v = self.visual_grouping(v0, self.visual_token)  # (B, C, d), (B, C, T)
        xa, logits_a = self.audio_grouping(a0, self.audio_token, v0)  # (B, C, d), (B, C, T)
        x, _ = self.av_grouping(xa, xv)  # (B, C, d)
        video = torch.sigmoid(self.fc_prob(x)).squeeze(-1)  # (B, C)
        p_a = torch.sigmoid(self.fc_prob_a(xa)).squeeze(-1)  # (B, C)
        p_v = torch.sigmoid(self.fc_prob_v(xv)).squeeze(-1)  # (B, C)
        # The reference's 'soft' map: 1 + softmax over T of the (softmax over groups) assignment.
        att_a = logits_a.softmax(dim=1).softmax(dim=2).transpose(1, 2)  # (B, T, C)
        att_v = logits_v.softmax(dim=1).softmax(dim=2).transpose(1, 2)  # (B, T, C)
        temporal_att = torch.stack([att_a, att_v], dim=2)  # (B, T, 2, C), sums to 1 over T
        p = torch.stack([p_a, p_v], dim=1).unsqueeze(1)  # (B, 1, 2, C)
        seg = (p * (1.0 + temporal_att)).clamp(max=1.0)  # (B, T, 2, C)
        modality_att = torch.full_like(seg, 0.5)
        return HANOutput(video, p_a, p_v, seg, temporal_att, modality_att)

    def auxiliary_loss(self) -> Tensor:
        """Class-token loss of the MGN recipe: CE(fc_cls(token_c), c) for audio + visual."""
        target = torch.arange(self.audio_token.shape[0], device=self.audio_token.device)
        return (F.cross_entropy(self.fc_cls(self.audio_token), target)
                + F.cross_entropy(self.fc_cls(self.visual_token), target))


def _init_weights(module: nn.Module) -> None:
    """The reference's init: Linear weights truncated normal (std 0.02), biases 0; LayerNorm
    1 / 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
