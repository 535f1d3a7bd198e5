"""`vaplan import-checkpoint`: an official AVVP-ECCV20 MMIL_Net state_dict -> a vaplan checkpoint.

`OfficialMMILNet` below re-states the official network (nets/net_audiovisual.py of
YapengTian/AVVP-ECCV20) in our own code with its module names, so its state_dict has the
official keys and shapes, and its forward takes the official inputs (80 ResNet frames per
video, fc_v before the 8-frame average pooling, sequence-first attention).
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vaplan.cli import run_app
from vaplan.models import HAN, count_parameters
from vaplan.official import (HAN_PARAMETERS, OFFICIAL_PARAMETERS, OFFICIAL_SHAPES,
                             OFFICIAL_TRAIN_CONFIG, RENAMED, SOURCE, UNUSED,
                             OfficialCheckpointError, import_official_checkpoint)
from vaplan.train import check_trained, load_checkpoint

torch.set_num_threads(1)
B, T, FRAMES = 3, 10, 80


class _Encoder(nn.Module):
    """The official `Encoder`: cloned layers + two LayerNorms that norm=None never applies."""

    def __init__(self, layer: nn.Module, num_layers: int = 1) -> None:
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])
        self.norm1 = nn.LayerNorm(512)
        self.norm2 = nn.LayerNorm(512)

    def forward(self, src_a, src_v):
        out_a, out_v = src_a, src_v
        for layer in self.layers:  # every layer reads the encoder's inputs, as upstream
            out_a, out_v = layer(src_a, src_v), layer(src_v, src_a)
        return out_a, out_v


class _HANLayer(nn.Module):
    """The official `HANLayer` (sequence-first attention: inputs permuted to (T, B, d))."""

    def __init__(self, d_model: int = 512, nhead: int = 1, ffn: int = 512, p: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=p)
        self.cm_attn = nn.MultiheadAttention(d_model, nhead, dropout=p)
        self.linear1 = nn.Linear(d_model, ffn)
        self.dropout = nn.Dropout(p)
        self.linear2 = nn.Linear(ffn, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout11, self.dropout12, self.dropout2 = nn.Dropout(p), nn.Dropout(p), nn.Dropout(p)

    def forward(self, src_q, src_v):
        q, kv = src_q.permute(1, 0, 2), src_v.permute(1, 0, 2)  # (T, B, d)
        cross = self.cm_attn(q, kv, kv)[0]
        own = self.self_attn(q, q, q)[0]
        q = self.norm1(q + self.dropout11(cross) + self.dropout12(own))
        q = self.norm2(q + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(q))))))
        return q.permute(1, 0, 2)  # (B, T, d)


class _CMTLayer(nn.Module):
    """The official `CMTLayer` (built, never called by MMIL_Net.forward)."""

    def __init__(self, d_model: int = 512, nhead: int = 1, ffn: int = 512, p: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=p)
        self.linear1 = nn.Linear(d_model, ffn)
        self.linear2 = nn.Linear(ffn, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)


def _transformer_encoder() -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d_model=512, nhead=1, dim_feedforward=512)
    return nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)


class OfficialMMILNet(nn.Module):
    """MMIL_Net with the official module names (so the official state_dict keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc_prob = nn.Linear(512, 25)
        self.fc_frame_att = nn.Linear(512, 25)
        self.fc_av_att = nn.Linear(512, 25)
        self.fc_a = nn.Linear(128, 512)
        self.fc_v = nn.Linear(2048, 512)
        self.fc_st = nn.Linear(512, 512)
        self.fc_fusion = nn.Linear(1024, 512)
        self.audio_encoder = _transformer_encoder()
        self.visual_encoder = _transformer_encoder()
        self.cmt_encoder = _Encoder(_CMTLayer())
        self.hat_encoder = _Encoder(_HANLayer())

    def forward(self, audio, visual, visual_st):
        """audio (B,10,128), visual (B,80,2048), visual_st (B,10,512)."""
        x1 = self.fc_a(audio)
        vid_s = self.fc_v(visual).permute(0, 2, 1).unsqueeze(-1)  # (B, d, 80, 1)
        vid_s = F.avg_pool2d(vid_s, (8, 1)).squeeze(-1).permute(0, 2, 1)  # (B, 10, d)
        x2 = self.fc_fusion(torch.cat((vid_s, self.fc_st(visual_st)), dim=-1))
        x1, x2 = self.hat_encoder(x1, x2)
        x = torch.cat([x1.unsqueeze(-2), x2.unsqueeze(-2)], dim=-2)  # (B, T, 2, d)
        frame_prob = torch.sigmoid(self.fc_prob(x))
        frame_att = torch.softmax(self.fc_frame_att(x), dim=1)
        av_att = torch.softmax(self.fc_av_att(x), dim=2)
        temporal_prob = frame_att * frame_prob
        global_prob = (temporal_prob * av_att).sum(dim=2).sum(dim=1)
        return (global_prob, temporal_prob[:, :, 0, :].sum(dim=1),
                temporal_prob[:, :, 1, :].sum(dim=1), frame_prob)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(model, path of its saved state_dict, its outputs on the inputs, the inputs)."""
    torch.manual_seed(0)
    net = OfficialMMILNet()
    with torch.no_grad():  # random weights away from the default init, incl. the LayerNorms
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net.eval()
    path = tmp_path_factory.mktemp("official") / "MMIL_Net.pt"
    torch.save(net.state_dict(), path)  # what main_avvp.py does
    gen = torch.Generator().manual_seed(1)
    inputs = (torch.randn(B, T, 128, generator=gen), torch.randn(B, FRAMES, 2048, generator=gen),
              torch.randn(B, T, 512, generator=gen))
    with torch.no_grad():
        outputs = net(*inputs)
    return net, path, outputs, inputs


def test_parameter_counts_and_key_tables(official):
    net, _, _, _ = official
    state = net.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == OFFICIAL_SHAPES
    assert sum(v.numel() for v in state.values()) == OFFICIAL_PARAMETERS == 9_307_723
    assert count_parameters(HAN()) == HAN_PARAMETERS == 4_569_675
    assert len(RENAMED) == 16 and all(k.startswith("hat_encoder.layers.0.") for k in RENAMED)
    assert sum(state[k].numel() for k in UNUSED) == OFFICIAL_PARAMETERS - HAN_PARAMETERS


def test_imported_checkpoint_gives_the_official_outputs(official, tmp_path):
    _, path, (video, audio, visual, seg), (a, v, st) = official
    out, extra = import_official_checkpoint(path, tmp_path / "han.pt")
    model, cfg, loaded_extra = load_checkpoint(out)
    assert cfg == OFFICIAL_TRAIN_CONFIG and loaded_extra == extra
    assert extra["imported"] is True and extra["source"] == SOURCE
    assert extra["epochs_completed"] == 1 and len(extra["source_sha256"]) == 64
    check_trained(model, loaded_extra, "the imported model")  # registrable
    pooled = v.reshape(B, T, 8, 2048).mean(dim=2)  # 80 frames -> 10 pre-pooled segments
    with torch.no_grad():
        for visual_in in (pooled, v):
            got = model(a, visual_in, st)
            for mine, theirs in zip((got.video, got.audio, got.visual, got.seg),
                                    (video, audio, visual, seg)):
                torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)


def _save(path, obj):
    torch.save(obj, path)
    return path


def _malformed(official, tmp_path):
    """name -> (file, words its one-line refusal must contain)."""
    net, good, _, _ = official
    state = net.state_dict()
    renamed = dict(state)
    renamed["hat_encoder.layers.0.linear9.weight"] = renamed.pop(
        "hat_encoder.layers.0.linear1.weight")
    missing = {k: v for k, v in state.items() if k != "cmt_encoder.norm2.bias"}
    shaped = dict(state, **{"fc_a.weight": torch.zeros(512, 64)})
    nonfinite = dict(state, **{"fc_prob.bias": torch.full((25,), float("nan"))})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:4096])
    return {
        "unknown": (_save(tmp_path / "unknown.pt", renamed),
                    "unknown key 'hat_encoder.layers.0.linear9.weight'"),
        "module": (_save(tmp_path / "module.pt", {f"module.{k}": v for k, v in state.items()}),
                   "strip the 'module.' prefix"),
        "missing": (_save(tmp_path / "missing.pt", missing),
                    "missing key 'cmt_encoder.norm2.bias'"),
        "shape": (_save(tmp_path / "shape.pt", shaped), "key 'fc_a.weight' has shape (512, 64)"),
        "nan": (_save(tmp_path / "nan.pt", nonfinite), "key 'fc_prob.bias' holds NaN/inf"),
        "list": (_save(tmp_path / "list.pt", [1, 2]), "holds a list, not a state_dict"),
        "not_tensor": (_save(tmp_path / "not_tensor.pt", dict(state, fc_v_weight=3)),
                       "unknown key 'fc_v_weight'"),
        "int": (_save(tmp_path / "int.pt", dict(state, **{"fc_v.bias": torch.zeros(512,
                                                                           dtype=torch.long)})),
                "key 'fc_v.bias' holds torch.int64"),
        "truncated": (truncated, "not a readable torch state_dict"),
        "absent": (tmp_path / "absent.pt", "no such file"),
    }


def test_malformed_files_are_refused_with_one_line(official, tmp_path, capsys):
    good = official[1]
    for name, (path, words) in _malformed(official, tmp_path).items():
        out = tmp_path / f"{name}.han.pt"
        with pytest.raises(OfficialCheckpointError) as err:
            import_official_checkpoint(path, out)
        assert str(path) in str(err.value) and words in str(err.value), (name, err.value)
        assert run_app(["import-checkpoint", str(path), "--out", str(out)]) == 2
        stderr = capsys.readouterr().err
        assert stderr.count("\n") == 1 and stderr.startswith("error: ") and words in stderr, name
        assert not out.exists(), name
    vaplan_ckpt = tmp_path / "han.pt"
    import_official_checkpoint(good, vaplan_ckpt)
    with pytest.raises(OfficialCheckpointError, match="already a vaplan checkpoint"):
        import_official_checkpoint(vaplan_ckpt, tmp_path / "again.pt")


def test_cli_imports_and_refuses_in_a_subprocess(official, tmp_path):
    good = official[1]
    ok = subprocess.run([sys.executable, "-m", "vaplan.cli", "import-checkpoint", str(good),
                         "--out", str(tmp_path / "han.pt")], capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "4,569,675 of the official 9,307,723" in ok.stdout
    load_checkpoint(tmp_path / "han.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    refused = subprocess.run([sys.executable, "-m", "vaplan.cli", "import-checkpoint", str(bad),
                              "--out", str(tmp_path / "bad.han.pt")], capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and str(bad) in refused.stderr, refused.stderr
