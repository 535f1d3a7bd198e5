"""vaplan: VAPLAN (segment-wise pseudo labels for weakly-supervised audio-visual video parsing).

The library is pure numpy for labels, metrics and denoising, torch for the model, losses and
trainer. It never imports ray or mlflow; `pipelines/` and `ray_jobs/` do the tracking.
"""

__version__ = "0.1.0"
