"""Fixtures shared by several test modules. Declared here once, so that a session fixture is built once per session
(a fixture imported into each module would be a separate fixture, built again for every module)."""

from features_support import tiny_env  # noqa: F401 (session fixture: tiny dataset and tiny models)
from workflow_support import tiny_run  # noqa: F401 (session fixture: the tiny workflow run end to end)
