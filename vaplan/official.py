"""Import a HAN trained by the official AVVP-ECCV20 code into a vaplan checkpoint.

The official `main_avvp.py` saves `torch.save(model.state_dict(), "models/MMIL_Net.pt")` of its
`MMIL_Net` (nets/net_audiovisual.py). That network builds more than its forward pass uses:

    used    fc_a, fc_v, fc_st, fc_fusion, fc_prob, fc_frame_att, fc_av_att (14 keys, same names
            here) and the hybrid attention layer `hat_encoder.layers.0.*` (16 keys, renamed to
            `hybrid_attention.*`): 4,569,675 parameters = vaplan.models.HAN(ModelConfig())
    unused  audio_encoder, visual_encoder (nn.TransformerEncoder), cmt_encoder (Encoder of a
            CMTLayer) and the LayerNorms hat_encoder.norm1/norm2 (Encoder is built with
            norm=None, so they are never applied): 4,738,048 parameters, dropped

(9,307,723 in all). The conversion is by explicit tables: every key of the file must be one of
the 74 official keys with its official shape, every official key must be present, and the
renamed weights then load strictly into HAN. Anything else is refused with an
`OfficialCheckpointError` (one line naming the file and the first offending key).

The written checkpoint (`vaplan.train.save_checkpoint` format) carries `OFFICIAL_TRAIN_CONFIG`
(the published model; the training fields are main_avvp.py's defaults, which the file does not
record) and `extra` = {"imported": true, "source": "official AVVP-ECCV20", "source_file",
"source_sha256", "epochs_completed": 1, "epochs_completed_note"}. `epochs_completed` is a lower
bound, not a count: main_avvp.py saves only after an epoch has been trained and validated, so
any file it wrote completed at least one epoch (`check_trained` needs >= 1); the real count and
best epoch are not in the file. See docs/fidelity.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vaplan.config import LossConfig, ModelConfig, TrainConfig
from vaplan.errors import UserError
from vaplan.models import HAN

SOURCE = "official AVVP-ECCV20"
OFFICIAL_PARAMETERS = 9_307_723  # MMIL_Net, every tensor of its state_dict
HAN_PARAMETERS = 4_569_675  # the part its forward pass uses = vaplan HAN(ModelConfig())

# The published model; training fields: main_avvp.py's argparse defaults (lr 3e-4, batch 16,
# 40 epochs, seed 1, StepLR(10, 0.1)) and its loss (BCE with label smoothing 1.0 / 0.9).
OFFICIAL_TRAIN_CONFIG = TrainConfig(lr=3e-4, batch_size=16, epochs=40, seed=1,
                                    lr_schedule="step", lr_step_size=10, lr_gamma=0.1,
                                    model=ModelConfig(), loss=LossConfig(variant="baseline"))

_D, _FFN, _C = 512, 512, 25


def _attention(prefix: str) -> dict[str, tuple[int, ...]]:
    """nn.MultiheadAttention(512, 1) parameters."""
    return {f"{prefix}.in_proj_weight": (3 * _D, _D), f"{prefix}.in_proj_bias": (3 * _D,),
            f"{prefix}.out_proj.weight": (_D, _D), f"{prefix}.out_proj.bias": (_D,)}


def _linear(prefix: str, out_dim: int, in_dim: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (out_dim, in_dim), f"{prefix}.bias": (out_dim,)}


def _norm(prefix: str) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (_D,), f"{prefix}.bias": (_D,)}


def _encoder_layer(prefix: str, cross: bool) -> dict[str, tuple[int, ...]]:
    """TransformerEncoderLayer / CMTLayer (self_attn only) or HANLayer (+ cm_attn)."""
    shapes = _attention(f"{prefix}.self_attn")
    if cross:
        shapes |= _attention(f"{prefix}.cm_attn")
    return (shapes | _linear(f"{prefix}.linear1", _FFN, _D) | _linear(f"{prefix}.linear2", _D, _FFN)
            | _norm(f"{prefix}.norm1") | _norm(f"{prefix}.norm2"))


# Official key -> vaplan HAN key, with the official shape.
_HEADS = {"fc_prob": (_C, _D), "fc_frame_att": (_C, _D), "fc_av_att": (_C, _D),
          "fc_a": (_D, 128), "fc_v": (_D, 2048), "fc_st": (_D, 512), "fc_fusion": (_D, 2 * _D)}
KEPT: dict[str, tuple[int, ...]] = {
    key: shape for name, (out_dim, in_dim) in _HEADS.items()
    for key, shape in _linear(name, out_dim, in_dim).items()}
RENAMED: dict[str, str] = {
    key: "hybrid_attention." + key.removeprefix("hat_encoder.layers.0.")
    for key in _encoder_layer("hat_encoder.layers.0", cross=True)}
# Built by MMIL_Net.__init__, never used by MMIL_Net.forward.
UNUSED: dict[str, tuple[int, ...]] = (
    _encoder_layer("audio_encoder.layers.0", cross=False)
    | _encoder_layer("visual_encoder.layers.0", cross=False)
    | _encoder_layer("cmt_encoder.layers.0", cross=False)
    | _norm("cmt_encoder.norm1") | _norm("cmt_encoder.norm2")
    | _norm("hat_encoder.norm1") | _norm("hat_encoder.norm2"))
OFFICIAL_SHAPES: dict[str, tuple[int, ...]] = (
    KEPT | _encoder_layer("hat_encoder.layers.0", cross=True) | UNUSED)


class OfficialCheckpointError(UserError, ValueError):
    """A file that is not a state_dict of the official MMIL_Net (names the file and the key)."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def load_official_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The official state_dict in `path`, checked against OFFICIAL_SHAPES (float32 tensors)."""
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"{path}: no such file (expected a state_dict saved by "
                                      f"the official main_avvp.py)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle of arbitrary objects, not a torch file
        raise OfficialCheckpointError(f"{path}: not a readable torch state_dict (truncated or "
                                      f"another format): {_first_line(err)}") from None
    if not isinstance(state, dict):
        raise OfficialCheckpointError(f"{path}: holds a {type(state).__name__}, not a "
                                      f"state_dict (an official MMIL_Net.pt is "
                                      f"torch.save(model.state_dict()))")
    if {"state_dict", "format_version"} <= set(state):
        raise OfficialCheckpointError(f"{path}: is already a vaplan checkpoint "
                                      f"(key 'state_dict'), not an official state_dict")
    return _checked(path, state)


def _checked(path: Path, state: dict) -> dict[str, torch.Tensor]:
    """Refuse unknown keys, non-tensors, missing keys and wrong shapes, in that order."""
    for key, value in state.items():
        if key not in OFFICIAL_SHAPES:
            hint = (" (saved from nn.DataParallel? strip the 'module.' prefix)"
                    if str(key).startswith("module.") else "")
            raise OfficialCheckpointError(f"{path}: unknown key {key!r}: not a key of the "
                                          f"official MMIL_Net{hint}")
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise OfficialCheckpointError(f"{path}: key {key!r} holds "
                                          f"{getattr(value, 'dtype', type(value).__name__)}; "
                                          f"expected a floating-point tensor")
    missing = [key for key in OFFICIAL_SHAPES if key not in state]
    if missing:
        raise OfficialCheckpointError(f"{path}: missing key {missing[0]!r} ({len(missing)} of "
                                      f"the {len(OFFICIAL_SHAPES)} official keys missing)")
    for key, shape in OFFICIAL_SHAPES.items():
        if tuple(state[key].shape) != shape:
            raise OfficialCheckpointError(f"{path}: key {key!r} has shape "
                                          f"{tuple(state[key].shape)}; the official MMIL_Net "
                                          f"has {shape}")
        if not bool(torch.isfinite(state[key]).all()):
            raise OfficialCheckpointError(f"{path}: key {key!r} holds NaN/inf weights")
    return {key: state[key].float() for key in OFFICIAL_SHAPES}


def convert_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checked official state -> vaplan HAN state: KEPT as is, RENAMED renamed, UNUSED dropped."""
    converted = {key: state[key] for key in KEPT}
    converted |= {new: state[old] for old, new in RENAMED.items()}
    return converted


def official_to_han(path: str | os.PathLike) -> HAN:
    """HAN(ModelConfig()) in eval mode carrying the official weights of `path`."""
    model = HAN(OFFICIAL_TRAIN_CONFIG.model)
    model.load_state_dict(convert_state(load_official_state(path)), strict=True)
    return model.eval()


def import_official_checkpoint(source: str | os.PathLike,
                               out: str | os.PathLike) -> tuple[Path, dict]:
    """Write the vaplan checkpoint `out` for the official state_dict `source`; (path, extra)."""
    from vaplan.teachers.common import file_sha256
    from vaplan.train import save_checkpoint

    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise OfficialCheckpointError(f"{out}: --out must differ from the official file")
    model = official_to_han(source)
    extra = {"imported": True, "source": SOURCE, "source_file": source.name,
             "source_sha256": file_sha256(source), "epochs_completed": 1,
             "epochs_completed_note": "lower bound: main_avvp.py saves only after an epoch is "
                                      "trained and validated; the real count and best epoch "
                                      "are not in the file"}
    return save_checkpoint(out, model, OFFICIAL_TRAIN_CONFIG, extra), extra
