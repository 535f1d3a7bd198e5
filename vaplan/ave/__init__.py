"""Weakly-supervised audio-visual event localization on AVE (docs/ave.md).

`vaplan.data.ave` holds the annotations; this package holds the models and their training.
"""
