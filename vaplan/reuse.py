"""Reuse keys and manifests of the pipeline's steps (pure: hashing and files, no MLflow).

key = sha256(step name, step format version, vaplan version, the step's config, the digests of
its inputs); a step whose key matches an earlier finished run reuses that run's files, checked
against the run's manifest (relative path -> sha256). docs/pipelines.md, "Reuse".
`StepResult` is what a step hands the next ones; the MLflow side is pipelines/reuse.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import vaplan
from vaplan.config import to_dict
from vaplan.teachers.common import file_sha256

STEP_FORMAT = 1  # bump when a step's outputs change meaning, to invalidate old keys
MANIFEST = "manifest.json"


@dataclass
class StepContext:
    """What every step needs besides its own config and inputs."""

    experiment_id: str
    parent_run_id: str
    work_dir: Path
    reuse: bool = True
    progress: bool = True


@dataclass(frozen=True)
class StepResult:
    """A finished step: its run, key, local output folder and recorded metrics."""

    name: str
    key: str
    run_id: str
    outputs_run_id: str  # the run whose artifacts hold the files (== run_id unless reused)
    out_dir: Path
    files: dict[str, str]  # relative path -> sha256
    metrics: dict[str, float]  # last value per metric name
    reused: bool = False

    def path(self, name: str) -> Path:
        if name not in self.files:
            raise KeyError(f"step {self.name!r} has no output {name!r}; "
                           f"it has {sorted(self.files)}")
        return self.out_dir / name

    def digest(self, name: str) -> str:
        self.path(name)
        return self.files[name]

    def artifact_uri(self, name: str) -> str:
        self.path(name)
        return f"runs:/{self.outputs_run_id}/{name}"


def last_values(records: Iterable[tuple[str, float, int]]) -> dict[str, float]:
    """The last value per metric of recorded (key, value, step) triples."""
    return {k: float(v) for k, v, _ in sorted(records, key=lambda r: r[2])}


def step_key(name: str, config: Any, inputs: Mapping[str, str]) -> str:
    """sha256 over the step name, format, vaplan version, config and input digests."""
    payload = {"step": name, "format": STEP_FORMAT, "vaplan": vaplan.__version__,
               "config": config, "inputs": dict(inputs)}
    text = json.dumps(payload, sort_keys=True,
                      default=lambda item: to_dict(item) if is_dataclass(item) else str(item))
    return hashlib.sha256(text.encode()).hexdigest()


def manifest_files(out_dir: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under out_dir but the manifest itself."""
    return {path.relative_to(out_dir).as_posix(): file_sha256(path)
            for path in sorted(out_dir.rglob("*")) if path.is_file() and path.name != MANIFEST}


def matches(folder: Path, manifest: Mapping) -> bool:
    """Every file the manifest lists is in `folder` with its recorded sha256."""
    return all((folder / name).is_file() and file_sha256(folder / name) == digest
               for name, digest in manifest.get("files", {}).items())
