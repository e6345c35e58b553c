"""One table as a self-contained HTML page: what ``snakemake --report`` shows inline (Markdown and CSV files are
only offered there as downloads)."""

from __future__ import annotations

import html


def table_page(title: str, head: list[str], rows: list[list[str]], note: str) -> str:
    """A self-contained HTML page of one table: what ``snakemake --report`` shows inline."""
    esc = html.escape
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>\n" for cells in rows)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + esc(title) + "</title><style>"
        "body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child{text-align:left}"
        "th{background:#eee}</style></head><body>\n"
        f"<h2>{esc(title)}</h2>\n<table>\n<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>\n"
        + body + f"</table>\n<p>{esc(note)}</p>\n</body></html>\n"
    )
