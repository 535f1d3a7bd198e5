"""Tracked VAPLAN pipelines: MLflow runs, the model registry and downstream pulls (`pipelines.run`,
docs/pipelines.md); nothing is configured at import time, heavy modules load on first use."""

from __future__ import annotations

from typing import Any

__all__ = ["run", "PipelineConfig", "PipelineResult", "pipeline_config_from_preset"]


def __getattr__(name: str) -> Any:
    """Lazy exports, so `import pipelines.config` does not import MLflow and torch."""
    if name in ("run", "PipelineResult"):
        from pipelines import pipeline

        return getattr(pipeline, name)
    if name in ("PipelineConfig", "pipeline_config_from_preset"):
        from pipelines import config

        return getattr(config, name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
