"""HAN: shapes for both presets, frame pooling, probabilities and attention pooling."""

from __future__ import annotations

import pytest
import torch

from vaplan.config import MODEL_PRESETS, ModelConfig
from vaplan.models import HAN, count_parameters

torch.set_num_threads(1)
B, T, C = 3, 10, 25


def _inputs(cfg: ModelConfig, frames: int = 80, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(B, T, cfg.audio_dim, generator=g)
    visual = torch.randn(B, frames, cfg.visual_dim, generator=g)
    third = torch.randn(B, T, cfg.visual_3d_dim, generator=g) if cfg.visual_3d_dim else None
    return audio, visual, third


@pytest.fixture(scope="module")
def han() -> HAN:
    torch.manual_seed(0)
    return HAN().eval()


def test_published_han_shapes_and_size(han):
    out = han(*_inputs(han.config))
    assert out.video.shape == out.audio.shape == out.visual.shape == (B, C)
    assert out.seg.shape == out.temporal_att.shape == out.modality_att.shape == (B, T, 2, C)
    assert 4_000_000 < count_parameters(han) < 7_000_000
    assert han.fc_v.in_features == 2048 and han.fc_st.in_features == 512
    assert han.fc_fusion.in_features == 1024


def test_clip_clap_preset_has_no_3d_stream():
    torch.manual_seed(0)
    model = HAN(MODEL_PRESETS["clip_clap"]).eval()
    assert not hasattr(model, "fc_st") and not hasattr(model, "fc_fusion")
    out = model(*_inputs(model.config, frames=T))
    assert out.seg.shape == (B, T, 2, C) and out.video.shape == (B, C)


def test_pre_pooled_visual_equals_80_frames(han):
    audio, frames, third = _inputs(han.config, frames=80)
    pooled = frames.reshape(B, T, 8, -1).mean(dim=2)  # (B, T, 2048)
    with torch.no_grad():
        a, b = han(audio, frames, third), han(audio, pooled, third)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def test_fc_v_then_pool_equals_pool_then_fc_v(han):
    frames = _inputs(han.config)[1]
    with torch.no_grad():
        official = han.fc_v(frames).reshape(B, T, 8, -1).mean(dim=2)  # fc_v on 80 frames, pool
        ours = han.fc_v(han.pool_frames(frames))
    torch.testing.assert_close(official, ours, atol=1e-5, rtol=0)


def test_probabilities_and_attention_pooling(han):
    with torch.no_grad():
        out = han(*_inputs(han.config))
    for p in (out.video, out.audio, out.visual, out.seg):
        assert bool(((p > 0) & (p < 1)).all())
    torch.testing.assert_close(out.temporal_att.sum(dim=1), torch.ones(B, 2, C))
    torch.testing.assert_close(out.modality_att.sum(dim=2), torch.ones(B, T, C))
    weighted = out.temporal_att * out.seg  # (B, T, 2, C)
    torch.testing.assert_close(out.video, (weighted * out.modality_att).sum(dim=(1, 2)))
    torch.testing.assert_close(out.audio, weighted[:, :, 0].sum(dim=1))
    torch.testing.assert_close(out.visual, weighted[:, :, 1].sum(dim=1))


def test_shared_layer_weights_and_bad_inputs(han):
    # One hybrid-attention layer serves both directions.
    layers = [m for m in han.modules() if type(m).__name__ == "HybridAttentionLayer"]
    assert len(layers) == 1
    audio, frames, _ = _inputs(han.config)
    with pytest.raises(ValueError, match="visual_3d"):
        han(audio, frames, None)
    with pytest.raises(ValueError, match="frames"):
        han(audio, frames[:, :75], None)


def test_train_mode_uses_dropout_and_gradients_flow():
    torch.manual_seed(0)
    model = HAN()
    inputs = _inputs(model.config)
    out = model(*inputs)
    out.video.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
