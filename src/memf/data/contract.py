"""The raw dataset contract: tables, columns, types, and how columns map to entities and modalities.

A dataset is a folder holding four Parquet tables and the media they reference by relative path:

- ``streams.parquet``: one row per live stream. Ids, the streaming-room fields (paper Table 3) and the target (``sales``).
- ``anchors.parquet``: one row per anchor (paper Table 1).
- ``items.parquet``: one row per commodity shown in a stream (paper Table 2), ordered by ``position``.
- ``clips.parquet``: one row per video or audio clip of a stream (paper Table 4), ordered by ``position``.

``docs/data-format.md`` is the human-readable version of this module. The column -> (entity, modality) mapping in
``config.yaml`` (key ``columns``) defaults to the paper's tables; the id, path and target columns below are fixed.

Two more parts of the contract come from the config: the numeric policy (key ``numeric``: each numeric column's
transform, which fixes what validation accepts there) and the bounds on one input (key ``limits``, :class:`Limits`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

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


# --- Numeric policy (config key `numeric`) ------------------------------------------------------------------------
#: Transform -> what a value must be for it: "non-negative" (finite and >= 0) or "finite".
NUMERIC_TRANSFORMS: dict[str, str] = {"log1p": "non-negative", "signed_log1p": "finite", "identity": "finite"}
#: The default policy: the paper's log transform for counts and money; scores and durations kept as they are.
DEFAULT_NUMERIC: dict[str, object] = {
    "default": "log1p",
    "columns": {"anchor": {"score": "identity"}, "room": {"duration": "identity"}},
}


def _check_transform(name: object, where: str) -> str:
    if name not in NUMERIC_TRANSFORMS:
        raise ValueError(f"config {where}: transform '{name}', expected one of {sorted(NUMERIC_TRANSFORMS)}")
    return str(name)


def numeric_transforms(
    policy: Mapping[str, Any] | None, mapping: Mapping[str, Mapping[str, list[str]]]
) -> dict[str, dict[str, str]]:
    """Entity -> numeric column -> transform, for every numeric column of the column mapping.

    ``policy`` is the config's ``numeric`` section (None: :data:`DEFAULT_NUMERIC`): ``default`` applies to every
    column that ``columns.<entity>.<column>`` does not name. Entries naming a column that is not a numeric column of
    the mapping are ignored (so the defaults can stay when the mapping is changed); :func:`unused_numeric_entries`
    lists them.

    Raises:
        ValueError: an unknown transform name (the message names the config key).
    """
    policy = DEFAULT_NUMERIC if policy is None else policy
    default = _check_transform(policy.get("default", DEFAULT_NUMERIC["default"]), "numeric.default")
    per_column = policy.get("columns") or {}
    out: dict[str, dict[str, str]] = {}
    for entity in FIELD_ENTITIES:
        chosen = per_column.get(entity) or {}
        for name, transform in chosen.items():
            _check_transform(transform, f"numeric.columns.{entity}.{name}")
        out[entity] = {c: str(chosen.get(c, default)) for c in mapping.get(entity, {}).get("numeric", [])}
    return out


def unused_numeric_entries(
    policy: Mapping[str, Any] | None, mapping: Mapping[str, Mapping[str, list[str]]]
) -> list[str]:
    """Config keys ``numeric.columns.<entity>.<column>`` that name no numeric column of the mapping."""
    policy = DEFAULT_NUMERIC if policy is None else policy
    unused = []
    for entity, chosen in (policy.get("columns") or {}).items():
        numeric = set(mapping.get(entity, {}).get("numeric", []))
        unused += [f"numeric.columns.{entity}.{name}" for name in (chosen or {}) if name not in numeric]
    return unused


def numeric_accepts(
    policy: Mapping[str, Any] | None, mapping: Mapping[str, Mapping[str, list[str]]]
) -> dict[str, dict[str, str]]:
    """Entity -> numeric column -> "non-negative" or "finite": what validation accepts in that column.

    This, not the transform itself, is the validate rule's parameter: switching a column between two transforms that
    accept the same values (identity and signed_log1p) reruns the numeric features only, not validation.
    """
    return {e: {c: NUMERIC_TRANSFORMS[t] for c, t in cols.items()} for e, cols in numeric_transforms(policy, mapping).items()}


# --- Bounds on what one input may cost (config key `limits`) --------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """Bounds on one input (config section ``limits``); what happens past each is in docs/data-format.md.

    - ``max_image_pixels``: an image with more pixels is refused before it is decoded (Pillow's decompression-bomb
      guard set to this value): a recorded drop.
    - ``max_video_seconds``, ``max_video_frames``: only the first ``min(frames, max_video_frames, max_video_seconds x
      fps)`` frames of a clip are read (frames are sampled within them); a longer clip is truncated and recorded.
    - ``max_audio_seconds``: only the first this many seconds of an audio clip are decoded; truncated and recorded.
    - ``max_text_chars``: a text field is cut to this many characters before it is tokenised; truncated and recorded.
    """

    max_image_pixels: int = 89_478_485  # Pillow's own default guard (about 9,459 x 9,459)
    max_video_seconds: float = 600.0
    max_video_frames: int = 18_000
    max_audio_seconds: float = 600.0
    max_text_chars: int = 10_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"config limits.{f.name} is {value!r}, expected a number > 0")

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> Limits:
        section = dict(section or {})
        unknown = sorted(set(section) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"config limits: unknown keys {unknown}, expected {sorted(f.name for f in fields(cls))}")
        return cls(**section)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: The limits each feature modality's extraction depends on (what its rule takes as a parameter).
MODALITY_LIMITS: dict[str, tuple[str, ...]] = {
    "text": ("max_text_chars",),
    "image": ("max_image_pixels",),
    "numeric": (),
    "video": ("max_video_seconds", "max_video_frames"),
    "audio": ("max_audio_seconds",),
}
