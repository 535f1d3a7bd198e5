"""Teacher checkpoints in their published layouts, loaded through the teachers' own code.

Weights cannot be downloaded here, so each file is written from a randomly initialised model of
the published architecture (every float tensor shifted by +0.5, so a tensor that was not
loaded cannot pass for one that was) and read back by `ClipTeacher` / `ClapTeacher`:

* open_clip ViT-B-32: `open_clip_model.safetensors` (the file docs/teachers.md downloads) and a
  `.pt` as open_clip's training saves it (`{"epoch", "name", "state_dict"}`, "module." keys).
* LAION CLAP HTSAT-tiny non-fusion: `630k-audioset-best.pt` as laion_clap's training saves it
  and `CLAP_Module.load_ckpt` reads it (`{"epoch", "optimizer", "state_dict"}`, "module."
  keys, with the `position_ids` buffer newer transformers drop). The RoBERTa text branch is
  the tiny local stand-in (`roberta_stand_in` in tests/conftest.py, no Hub), so the file holds
  its keys.

Files are fp16 (half the disk; fp16 -> fp32 is exact, so equality stays exact).
"""

from __future__ import annotations

import hashlib
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # never touch the network (set before transformers loads)

import pytest  # noqa: E402

pytest.importorskip("open_clip")
pytest.importorskip("laion_clap")
torch = pytest.importorskip("torch")

from vaplan.errors import UserError  # noqa: E402
from vaplan.teachers.common import CheckpointError  # noqa: E402


def _published_tensors(model) -> dict[str, "torch.Tensor"]:
    """The model's state_dict, float tensors shifted by +0.5 and stored as fp16."""
    return {k: (v.float() + 0.5).half() if v.is_floating_point() else v.clone()
            for k, v in model.state_dict().items()}


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_every_tensor(model, tensors: dict, skip=()) -> int:
    """Every tensor of `model` equals the file's; returns how many were compared."""
    state = model.state_dict()
    compared = 0
    for key, value in state.items():
        if key.endswith(skip):
            continue
        expected = tensors[key]
        assert value.shape == expected.shape, key
        assert torch.equal(value, expected.to(value.dtype)), f"{key} differs from the file"
        compared += 1
    assert compared == len([k for k in tensors if not k.endswith(skip)])
    return compared


def _one_line_error(err: pytest.ExceptionInfo, path) -> str:
    message = str(err.value)
    assert isinstance(err.value, UserError) and isinstance(err.value, CheckpointError)
    assert "\n" not in message and str(path) in message
    return message


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    """(tensors, safetensors file, training-style .pt file) of a random ViT-B-32."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("clip")
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    tensors = _published_tensors(model)
    del model
    safetensors = folder / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(safetensors))
    training = folder / "epoch_32.pt"
    torch.save({"epoch": 32, "name": "ViT-B-32-test",
                "state_dict": {f"module.{k}": v for k, v in tensors.items()}}, training)
    return tensors, safetensors, training


@pytest.fixture(scope="module")
def clip_teacher(clip_files):
    from vaplan.teachers.clip_teacher import ClipTeacher

    _, safetensors, _ = clip_files
    return ClipTeacher("ViT-B-32", checkpoint=str(safetensors), pretrained=None)


@pytest.fixture(scope="module")
def clap_file(roberta_stand_in, tmp_path_factory):
    """(tensors, 630k-audioset-best.pt) of a random HTSAT-tiny CLAP (tiny RoBERTa)."""
    import laion_clap

    module = laion_clap.CLAP_Module(enable_fusion=False, amodel="HTSAT-tiny", tmodel="roberta",
                                    device="cpu")
    tensors = _published_tensors(module.model)
    del module
    # the published files carry the position_ids buffer that transformers >= 4.31 dropped
    saved = dict(tensors)
    saved.setdefault("text_branch.embeddings.position_ids", torch.arange(80)[None])
    path = tmp_path_factory.mktemp("clap") / "630k-audioset-best.pt"
    torch.save({"epoch": 45, "name": "test-630k-audioset",
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
                "state_dict": {f"module.{k}": v for k, v in saved.items()}}, path)
    return tensors, path


@pytest.fixture(scope="module")
def clap_teacher(clap_file):
    from vaplan.teachers.clap_teacher import ClapTeacher

    _, path = clap_file
    return ClapTeacher(str(path))


# ---------------------------------------------------------------- open_clip ViT-B-32


def test_clip_safetensors_loads_every_tensor_and_digest(clip_files, clip_teacher):
    tensors, safetensors, _ = clip_files
    assert not clip_teacher.random_weights
    assert _assert_every_tensor(clip_teacher.model, tensors) == len(tensors) > 150
    assert clip_teacher.checkpoint_sha256 == _sha256(safetensors)


def test_clip_training_pt_layout_loads_every_tensor(clip_files, clip_teacher):
    from vaplan.teachers.clip_teacher import load_clip_weights

    tensors, _, training = clip_files
    model = clip_teacher.model
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
    load_clip_weights(model, str(training))
    _assert_every_tensor(model, tensors)


def test_clip_bad_files_are_one_line_errors(clip_files, clap_file, clip_teacher, tmp_path):
    from vaplan.teachers.clip_teacher import load_clip_weights

    tensors, safetensors, training = clip_files
    model = clip_teacher.model
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(safetensors.read_bytes()[: 10_000_000])
    with pytest.raises(CheckpointError) as err:
        load_clip_weights(model, str(truncated))
    assert "cannot read" in _one_line_error(err, truncated)

    truncated_pt = tmp_path / "truncated.pt"
    truncated_pt.write_bytes(training.read_bytes()[: 5_000_000])
    with pytest.raises(CheckpointError) as err:
        load_clip_weights(model, str(truncated_pt))
    assert "cannot read" in _one_line_error(err, truncated_pt)

    _, clap_path = clap_file  # the wrong model: a CLAP checkpoint given as --clip-ckpt
    with pytest.raises(CheckpointError) as err:
        load_clip_weights(model, str(clap_path))
    message = _one_line_error(err, clap_path)
    assert "missing keys" in message and "unexpected keys" in message and "open_clip" in message

    # the key checks, on what the reader returned (no more 300 MB files to write)
    partial = tmp_path / "partial.pt"
    with pytest.raises(CheckpointError) as err:
        load_clip_weights(model, str(partial), state={
            k: v for k, v in tensors.items() if not k.startswith("visual.transformer")})
    message = _one_line_error(err, partial)
    assert "missing keys" in message and "visual.transformer.resblocks" in message

    other = tmp_path / "vit_b_16.pt"  # same keys, other shapes (a ViT-B-16 file)
    with pytest.raises(CheckpointError) as err:
        load_clip_weights(model, str(other), state=dict(
            tensors, **{"visual.conv1.weight": torch.zeros(768, 3, 16, 16)}))
    assert "visual.conv1.weight" in _one_line_error(err, other)


# ---------------------------------------------------------------- LAION CLAP HTSAT-tiny


def test_clap_published_layout_loads_every_tensor_and_digest(clap_file, clap_teacher, tmp_path):
    from vaplan.teachers.cache import ScoreCacheWriter, read_cache_meta
    from vaplan.teachers.run import teachers_meta

    tensors, path = clap_file
    assert not clap_teacher.random_weights
    compared = _assert_every_tensor(clap_teacher.module.model, tensors, skip=("position_ids",))
    assert compared > 200
    assert clap_teacher.checkpoint_sha256 == _sha256(path)
    # what `vaplan teach` writes into the cache's meta.json (the digest of the file)
    with ScoreCacheWriter(tmp_path / "cache", teachers_meta({"audio": clap_teacher}, False)):
        pass
    meta = read_cache_meta(tmp_path / "cache")
    assert meta["random_weights"] is False
    assert meta["teachers"]["audio"]["checkpoint_sha256"] == _sha256(path)
    assert meta["teachers"]["audio"]["checkpoint"] == str(path)


def test_clap_bare_state_dict_without_prefix_loads(clap_file, clap_teacher, tmp_path):
    tensors, _ = clap_file
    bare = tmp_path / "bare.pt"
    torch.save({k: v for k, v in tensors.items() if not k.endswith("position_ids")}, bare)
    with torch.no_grad():
        for param in clap_teacher.module.model.parameters():
            param.zero_()
    clap_teacher._load_checkpoint(str(bare))
    _assert_every_tensor(clap_teacher.module.model, tensors, skip=("position_ids",))


def test_clap_bad_files_are_one_line_errors(clap_file, clip_files, clap_teacher, tmp_path):
    tensors, path = clap_file
    load = clap_teacher._load_checkpoint  # what ClapTeacher(checkpoint) runs after building

    truncated = tmp_path / "630k-audioset-best.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        load(str(truncated))
    assert "cannot read" in _one_line_error(err, truncated)

    _, _, clip_pt = clip_files  # the wrong model: an open_clip file given as --clap-ckpt
    with pytest.raises(CheckpointError) as err:
        load(str(clip_pt))
    message = _one_line_error(err, clip_pt)
    assert "missing keys" in message and "HTSAT-tiny" in message

    missing = tmp_path / "no_audio_projection.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tensors.items()
                               if not k.startswith("audio_projection")}}, missing)
    with pytest.raises(CheckpointError) as err:
        load(str(missing))
    assert "audio_projection" in _one_line_error(err, missing)

    fusion = tmp_path / "630k-audioset-fusion-best.pt"  # fusion adds modules: unexpected keys
    extra = {"audio_branch.fusion_model.local_att.0.weight": torch.zeros(64, 64, 1, 1)}
    torch.save({"state_dict": {f"module.{k}": v for k, v in {**tensors, **extra}.items()}}, fusion)
    with pytest.raises(CheckpointError) as err:
        load(str(fusion))
    assert "unexpected keys" in _one_line_error(err, fusion)

    not_torch = tmp_path / "download.html"
    not_torch.write_text("<html>404</html>")
    with pytest.raises(CheckpointError) as err:
        load(str(not_torch))
    _one_line_error(err, not_torch)


def test_teach_cli_prints_a_bad_checkpoint_as_one_line(clip_files, tmp_path, capsys):
    from vaplan.cli import run_app

    _, safetensors, _ = clip_files
    truncated = tmp_path / "open_clip_model.safetensors"
    truncated.write_bytes(safetensors.read_bytes()[:1000])
    split = tmp_path / "split.csv"
    split.write_text("filename\tevent_labels\naaaaaaaaaaa_0_10\tSpeech\n")
    code = run_app(["teach", "--videos", str(tmp_path), "--split-csv", str(split),
                    "--out", str(tmp_path / "cache"), "--modalities", "visual",
                    "--clip-ckpt", str(truncated)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and str(truncated) in err[-1]
