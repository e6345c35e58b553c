"""Experiment matrix, tables and the paper's figures, recomputed from the runs (docs/training.md).

Modules: :mod:`~memf.training.matrix` (the experiment matrix; standard library only, imported by the workflow),
:mod:`~memf.report.experiments` (reading runs), :mod:`~memf.report.bootstrap`, :mod:`~memf.report.tables`,
:mod:`~memf.report.figures`.
"""
