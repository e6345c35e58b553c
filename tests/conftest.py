"""Fixtures shared by several test modules. Declared here once, so that a session fixture is built once per session
(a fixture imported into each module would be a separate fixture, built again for every module)."""

import pytest

from features_support import tiny_env  # noqa: F401 (session fixture: tiny dataset and tiny models)
from workflow_support import (
    tiny_files_last,
    tiny_run,  # noqa: F401 (session fixture: the tiny workflow run end to end)
    tiny_run_in_background,  # noqa: F401 (starts it at the session's first test)
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tiny_files_last(items)  # by the time a worker reaches them, the run started at the first test has ended
