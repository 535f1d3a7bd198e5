"""`vaplan register-checkpoint`: a checkpoint no pipeline made (the official HAN after
`vaplan import-checkpoint`) is scored, registered with its weak labels, gated and evaluable."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from vaplan.cli import run_app
from vaplan.config import get_preset
from vaplan.models import HAN
from vaplan.official import OFFICIAL_TRAIN_CONFIG
from vaplan.train import save_checkpoint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A checkpoint shaped like `vaplan import-checkpoint`'s output (official HAN, random)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "han.pt"
    extra = {"imported": True, "source": "official AVVP-ECCV20", "epochs_completed": 1}
    return save_checkpoint(path, HAN(OFFICIAL_TRAIN_CONFIG.model).eval(), OFFICIAL_TRAIN_CONFIG,
                           extra)


def test_registered_scored_gated_and_evaluable(imported, store, sim_tiny, tmp_path):
    from pipelines.commands import evaluate_registered, logged_scores, pull
    from pipelines.report import open_report
    from pipelines.imported import register_checkpoint

    first = register_checkpoint(imported, get_preset("sim-tiny"), model_name="official-han",
                                preset="sim-tiny", tracking_uri=store)
    assert first["version"] == "1" and first["decision"]["promoted"]  # no champion yet
    assert "imported from official AVVP-ECCV20" in first["description"]
    from mlflow import MlflowClient

    tags = MlflowClient(store).get_model_version("official-han", "1").tags
    assert tags["vaplan.backbone"] == "han" and len(tags) <= 8
    # one val prediction gives the logged score and the gate's per-video scores (their mean)
    assert first["decision"]["candidate_score"] == pytest.approx(first["scores"]["val"][
        "seg_type"], abs=1e-9)
    metrics = MlflowClient(store).get_run(first["parent_run_id"]).data.metrics
    assert metrics["registry/version"] == 1 and metrics["registry/promoted"] == 1
    again = register_checkpoint(imported, get_preset("sim-tiny"), model_name="official-han",
                                tracking_uri=store)
    assert again["version"] == "2" and not again["decision"]["promoted"]  # same model: noise
    assert again["decision"]["low"] is not None  # the gate compared it with v1
    scores = evaluate_registered("models:/official-han@champion", split="test",
                                 tracking_uri=store, dataset=sim_tiny)
    assert scores == pytest.approx(first["scores"]["test"], abs=1e-9)
    assert logged_scores("official-han", tracking_uri=store) == pytest.approx(scores, abs=1e-9)
    page, origin = open_report("models:/official-han/2", tmp_path / "v2.html", tracking_uri=store)
    assert origin == "stored" and "official-han" in page.read_text()
    folder = pull("official-han", str(tmp_path / "pulled"), tracking_uri=store)
    table = pq.read_table(folder / "labels.parquet").to_pandas()
    assert set(table["stage"]) == {"video"} and table["labels"].map(len).sum() == 0
    train = table[(table["split"] == "train") & (table["segment"] == 0)]
    assert len(train) == 2 * len(sim_tiny.train)  # audio and visual rows of every video
    assert train["video_labels"].map(len).sum() == 2 * int(sim_tiny.train.video_labels.sum())


def test_bad_checkpoints_are_refused_with_one_line(imported, store, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    untrained = save_checkpoint(tmp_path / "untrained.pt", HAN(OFFICIAL_TRAIN_CONFIG.model),
                                OFFICIAL_TRAIN_CONFIG)
    for path, words in ((bad, str(bad)), (untrained, "never completed a training epoch")):
        assert run_app(["register-checkpoint", str(path), "--preset", "sim-tiny",
                        "--tracking-uri", store]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
