"""Atomic file output and validated table input.

Every output of the pipeline goes through :func:`atomic_path`: the writer fills a temporary file in the target's own
folder, and only a complete file is renamed onto the target (``os.replace`` is atomic within one filesystem). A writer
killed half-way leaves no file at the target, so Snakemake sees the job as not done and reruns it. A full disk
(ENOSPC) is reported as one plain :class:`OSError` naming the target; the temporary file is removed and a previous
file at the target is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_UMASK = os.umask(0)
os.umask(_UMASK)


class DataError(ValueError):
    """Input data that breaks the documented contract. The message names the file and the field at fault."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` if the block completes.

    The temporary file keeps the target's suffix, so libraries that infer formats from names still work.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the permissions open() would
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise OSError(errno.ENOSPC, f"no space left on device while writing {target}: nothing was written there "
                      "(a previous file is unchanged); free some space and rerun") from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC (or a disk quota exceeded), also when a library re-raised it under another errno or as text."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``target`` atomically."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_parquet(target: str | os.PathLike[str], table: pa.Table | Any) -> None:
    """Write an Arrow table (or a polars DataFrame) to ``target`` atomically."""
    if not isinstance(table, pa.Table):
        table = table.to_arrow()
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)


_TYPE_CHECKS = {
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "integer": pa.types.is_integer,
    "float": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
}


def read_parquet_checked(
    path: str | os.PathLike[str], columns: dict[str, str], hints: dict[str, str] | None = None
) -> pa.Table:
    """Read one Parquet file, checking that each named column exists with the expected type family.

    Args:
        path: the file.
        columns: column -> "string" | "integer" | "float" ("float" also accepts integers).
        hints: column -> what fixes a missing or mistyped column (e.g. the config key that maps it), added to the
            message.

    Raises:
        DataError: the file is unreadable (no footer, corrupt pages), or a column is missing or of the wrong type;
            one line naming the file, the column, what was found and what was expected.
    """
    path = Path(path)
    hints = hints or {}
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({_plain(exc)})") from exc
    for name, family in columns.items():
        idx = schema.get_field_index(name)
        hint = f"; {hints[name]}" if name in hints else ""
        if idx < 0:
            same = [f.name for f in schema if _TYPE_CHECKS[family](f.type) and f.name not in columns]
            found = f"{family} columns not yet used: {', '.join(same[:12])}" if same else f"no other {family} column"
            raise DataError(f"{path}: missing column '{name}' (expected {family}; found {found}){hint}")
        if not _TYPE_CHECKS[family](schema.field(idx).type):
            raise DataError(f"{path}: column '{name}' has type {schema.field(idx).type}, expected {family}{hint}")
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({_plain(exc)})") from exc


def _plain(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
