"""LLP-sim: an LLP-shaped benchmark with known segment truth (see docs/llp-sim.md).

Public API: `build_sim_dataset(cfg)`, `write_sim_teacher_cache(dataset, split, path)`,
`SimParams` / `DEFAULT_PARAMS` (the constants of the generative model).
"""

from vaplan.sim.build import build_sim_dataset, dataset_digest
from vaplan.sim.params import DEFAULT_PARAMS, SIM_VERSION, SimParams
from vaplan.sim.teachers import SimTeacherScores, softmax_cosines, write_sim_teacher_cache

__all__ = ["build_sim_dataset", "dataset_digest", "write_sim_teacher_cache", "SimParams",
           "DEFAULT_PARAMS", "SIM_VERSION", "SimTeacherScores", "softmax_cosines"]
