"""The input embedding every backbone shares (HAN, MGN and MM-Pyramid all start with it).

    audio (B,T,Da) --fc_a--> (B,T,d)
    visual (B,T*F or T,Dv) --pool frames, fc_v--> (B,T,d) -+- concat with fc_st(3D) -> fc_fusion
                                                            (only when visual_3d_dim > 0)

The layers keep the official names (fc_a, fc_v, fc_st, fc_fusion), so checkpoints of the
reference code map key for key. The official code applies fc_v to the 80 frames and then
averages each 8; fc_v is affine, so pooling first is the same value (docs/fidelity.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaplan.config import ModelConfig


class FeatureInputs(nn.Module):
    """Base module with fc_a / fc_v (/ fc_st, fc_fusion) to a common width `d`."""

    config: ModelConfig

    def build_inputs(self, cfg: ModelConfig, d: int) -> None:
        """Create the input layers (call once in __init__, after nn.Module.__init__)."""
        self.config = cfg
        self.fc_a = nn.Linear(cfg.audio_dim, d)
        self.fc_v = nn.Linear(cfg.visual_dim, d)
        if cfg.visual_3d_dim > 0:
            self.fc_st = nn.Linear(cfg.visual_3d_dim, d)
            self.fc_fusion = nn.Linear(2 * d, d)

    def embed(self, audio: Tensor, visual: Tensor,
              visual_3d: Tensor | None) -> tuple[Tensor, Tensor]:
        """audio (B,T,Da), visual (B,T*F or T,Dv), visual_3d (B,T,D3) -> a, v (B,T,d)."""
        return self.fc_a(audio), self.embed_visual(visual, visual_3d)

    def pool_frames(self, visual: Tensor) -> Tensor:
        """(B, T*F, Dv) frames -> (B, T, Dv) segment means; (B, T, Dv) passes through.

        fc_v is affine, so pooling before it equals the official fc_v-then-pool order.
        """
        T = self.config.num_segments
        B, frames, dim = visual.shape
        if frames == T:
            return visual
        if frames % T != 0:
            raise ValueError(f"visual features have {frames} frames; expected {T} pre-pooled "
                             f"segments or a multiple of {T} frames (80 for LLP ResNet152)")
        return visual.reshape(B, T, frames // T, dim).mean(dim=2)  # (B, T, Dv)

    def embed_visual(self, visual: Tensor, visual_3d: Tensor | None) -> Tensor:
        """2D (+ 3D) visual features -> (B, T, d)."""
        x = self.fc_v(self.pool_frames(visual))  # (B, T, d)
        if self.config.visual_3d_dim == 0:
            return x
        if visual_3d is None:
            raise ValueError(f"this {type(self).__name__} has a 3D stream (visual_3d_dim="
                             f"{self.config.visual_3d_dim}); pass visual_3d (B, T, D3)")
        st = self.fc_st(visual_3d)  # (B, T, d)
        return self.fc_fusion(torch.cat([x, st], dim=-1))  # (B, T, 2d) -> (B, T, d)

    def auxiliary_loss(self) -> Tensor | None:
        """A loss term of the backbone's own recipe added to the training loss (None: none)."""
        return None
