"""The raw dataset contract: tables, columns, types, and how columns map to entities and modalities.

A dataset is a folder holding four Parquet tables and the media they reference by relative path:

- ``streams.parquet``: one row per live stream. Ids, the streaming-room fields (paper Table 3) and the target (``sales``).
- ``anchors.parquet``: one row per anchor (paper Table 1).
- ``items.parquet``: one row per commodity shown in a stream (paper Table 2), ordered by ``position``.
- ``clips.parquet``: one row per video or audio clip of a stream (paper Table 4), ordered by ``position``.

``docs/data-format.md`` is the human-readable version of this module. The column -> (entity, modality) mapping in
``config.yaml`` (key ``columns``) defaults to the paper's tables; the id, path and target columns below are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Modality = Literal["text", "image", "numeric"]
Entity = Literal["anchor", "commodity", "room"]

TABLES: tuple[str, ...] = ("streams", "anchors", "items", "clips")
ENTITY_TABLE: dict[str, str] = {"anchor": "anchors", "commodity": "items", "room": "streams"}
#: Entities described by field tokens, then the two clip-sequence entities (paper section 3.3.3 order).
FIELD_ENTITIES: tuple[str, ...] = ("anchor", "commodity", "room")
CLIP_KINDS: tuple[str, ...] = ("video", "audio")
ENTITIES: tuple[str, ...] = ("anchor", "commodity", "room", "video", "audio")
MODALITIES: tuple[str, ...] = ("text", "image", "numeric")

#: Structural columns every dataset must have, with their Arrow type family ("string", "integer", "float").
KEY_COLUMNS: dict[str, dict[str, str]] = {
    "streams": {"stream_id": "string", "anchor_id": "string", "sales": "float"},
    "anchors": {"anchor_id": "string"},
    "items": {"stream_id": "string", "item_id": "string", "position": "integer"},
    "clips": {"stream_id": "string", "clip_id": "string", "kind": "string", "position": "integer", "path": "string"},
}

#: Default column mapping: the paper's Tables 1-3 (column names as the paper spells them, in camelCase).
DEFAULT_COLUMNS: dict[str, dict[str, list[str]]] = {
    "anchor": {
        "text": ["broadCasterField", "categoryName", "nick", "tags"],
        "image": ["headImage"],
        "numeric": [
            "avg30DayView", "avgComment", "avgLike", "commentCount",
            "fansCount", "followTopCount", "likeCount", "score",
        ],
    },
    "commodity": {
        "text": ["title", "itemRights", "brandName", "shopName", "categoryName"],
        "image": ["image"],
        "numeric": ["couponPrice", "price"],
    },
    "room": {
        "text": ["title", "tag"],
        "image": ["headImage"],
        "numeric": ["duration"],
    },
}

#: Modality -> Arrow type family of its columns. Image columns hold relative paths.
MODALITY_TYPE: dict[str, str] = {"text": "string", "image": "string", "numeric": "float"}


@dataclass(frozen=True)
class Column:
    """One attribute column: where it lives and what it means."""

    entity: str
    modality: str
    name: str

    @property
    def table(self) -> str:
        return ENTITY_TABLE[self.entity]


def columns_from_config(mapping: dict[str, dict[str, list[str]]]) -> list[Column]:
    """Flatten the config's ``columns`` mapping into ``Column``s, in entity then modality order."""
    out: list[Column] = []
    for entity in FIELD_ENTITIES:
        for modality in MODALITIES:
            out.extend(Column(entity, modality, name) for name in mapping.get(entity, {}).get(modality, []))
    return out


def required_columns(mapping: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, str]]:
    """Table -> {column: type family} that a dataset must provide under this column mapping."""
    req = {table: dict(cols) for table, cols in KEY_COLUMNS.items()}
    for col in columns_from_config(mapping):
        req[col.table][col.name] = MODALITY_TYPE[col.modality]
    return req
