"""`labels.source = video | ma | plg | pld` in the tracked pipeline (issue 12 item 3,
docs/pipelines.md "Label sources"): the option and its losses are checked before any run, and
`video` (Table 5 row 1) and `ma` (MA's labels from a video-label model, Table 8's "+MA") each
end in a registered version whose label table and checkpoint name the source. sim-tiny, a
small HAN, one epoch."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from pipelines.config import SOURCE_STEPS, pipeline_config_from_preset
from vaplan.config import LABEL_KINDS, configure, get_preset
from vaplan.errors import ConfigError

SMALL = ["train.epochs=1", "train.num_threads=1", "train.model.hidden_dim=32",
         "train.model.ffn_dim=32"]


def test_labels_source_and_its_losses_are_checked_before_any_run():
    from vaplan import ablation

    assert LABEL_KINDS == ("video", "ma", "plg", "pld") and ablation.LABEL_KINDS is LABEL_KINDS
    tiny = get_preset("sim-tiny")
    assert configure(tiny).labels.source == "pld"  # the default: today's pipeline
    assert configure(tiny).train.loss.variant == "richness"
    # The source's loss (LABEL_RECIPES) fills the default; an explicit --set wins if it fits.
    assert configure(tiny, ["labels.source=video"]).train.loss.variant == "baseline"
    assert configure(tiny, ["labels.source=video", "train.loss.variant=video"]
                     ).train.loss.variant == "video"
    assert configure(tiny, ["labels.source=ma"]).train.loss.variant == "video"
    with pytest.raises(ConfigError, match=r"^labels\.source must be one of \['video', 'ma', "
                                          r"'plg', 'pld'\], got 'teachers'$"):
        configure(tiny, ["labels.source=teachers"])
    with pytest.raises(ConfigError, match=r"^labels\.source=ma trains on video-level labels "
                                          r"without segment labels: train\.loss\.variant must "
                                          r"be video, got richness$"):
        configure(tiny, ["labels.source=ma", "train.loss.variant=richness"])
    with pytest.raises(ConfigError, match=r"must be baseline or video, got naive"):
        pipeline_config_from_preset("sim-tiny", ["labels.source=video",
                                                 "train.loss.variant=naive"])
    assert SOURCE_STEPS["plg"] == ("generate_labels", "train", "evaluate", "register")


@pytest.mark.parametrize("source", ["video", "ma"])
def test_video_and_ma_sources_end_in_a_registered_version_naming_the_source(
        source, store, sim_tiny, tmp_path):
    from pipelines import tracking
    from pipelines.commands import pull
    from pipelines.pipeline import LABELS_TAG, run
    from vaplan.io import read_json
    from vaplan.label_table import read_labels
    from vaplan.train import load_checkpoint

    model_name = f"vaplan-han-{source}-test"
    cfg = pipeline_config_from_preset("sim-tiny", [f"labels.source={source}", *SMALL],
                                      tracking_uri=store, progress=False,
                                      model_name=model_name)
    result = run(cfg, dataset=sim_tiny)
    assert list(result.steps) == list(SOURCE_STEPS[source])
    client = tracking.client()
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["labels.source"] == source
    assert parent.data.tags[LABELS_TAG] == source
    assert client.get_run(result.steps["register"].run_id).data.tags[LABELS_TAG] == source
    record = result.registration["labels"]
    assert record["source"] == source and record["apply"] == "never"
    assert {made["source"] for made in record["modalities"].values()} == {source}

    version = result.registration["version"]
    assert len(client.get_model_version(model_name, version).tags) <= 8
    folder = pull(model_name, tmp_path / "pulled", version=version, tracking_uri=store)
    stages = set(pq.read_table(folder / "labels.parquet", columns=["stage"])
                 .column("stage").to_pylist())
    assert stages == {source}  # the registered label table names the source
    _, trained, extra = load_checkpoint(folder / "checkpoint.pt")
    assert extra["labels_source"] == source
    assert read_json(folder / "config.json")["experiment"]["labels"]["source"] == source

    train_run = client.get_run(result.steps["train"].run_id)
    if source == "video":  # Table 5 row 1: Eq. 2 on y, no segment labels in the table
        assert trained.loss.variant == "baseline"
        labels = read_labels(folder / "labels.parquet")
        assert not labels["train"][1].seg_audio.any()
        return
    # ma: a video-label model (Eq. 2), MA labels of it, then L_V on them
    assert train_run.data.params["train.loss.variant"] == "baseline"
    assert trained.loss.variant == "video"
    ma_run = client.get_run(result.steps["ma_labels"].run_id)
    quality = {k: v for k, v in ma_run.data.metrics.items() if k.startswith("ma/val/")}
    assert set(quality) == {f"ma/val/{m}/{k}" for m in ("audio", "visual")
                            for k in ("video_precision", "seg", "event", "average")}
    assert parent.data.metrics["ma/val/visual/average"] == quality["ma/val/visual/average"]
    labels = read_labels(folder / "labels.parquet")["train"][1]
    y = sim_tiny.train.video_labels.astype(bool)
    for seg in (labels.seg_audio, labels.seg_visual):  # MA labels: subsets of y, all T
        assert not (seg.max(axis=1).astype(bool) & ~y).any()
        assert (seg == seg[:, :1]).all()
