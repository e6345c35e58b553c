"""Per-job logging for Snakemake script adapters."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator


@contextlib.contextmanager
def job_log(path: str | os.PathLike[str]) -> Iterator[logging.Logger]:
    """Send this job's stdout, stderr (progress bars) and logging to ``path``.

    An exception is written to the log with its traceback, and its one-line message to the real stderr (the console
    Snakemake shows), then re-raised so the job fails.
    """
    real_stderr = sys.stderr
    with open(path, "a", encoding="utf-8", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
                yield logging.getLogger("memf")
        except BaseException as exc:
            traceback.print_exc(file=fh)
            print(f"memf error: {exc} (log: {path})", file=real_stderr)
            raise
        finally:
            root.removeHandler(handler)
