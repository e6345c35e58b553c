"""The package's release (pyproject.toml's ``version``; ``memf.__version__``), recorded in the datasets the simulator
writes and in every bundle. Every stage's code version covers it (the ``memf`` package imports it)."""

VERSION = "0.1.0"
