"""The simulator's settings: the ``simulator`` section of ``config.yaml``, checked and typed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from memf.data.contract import DEFAULT_COLUMNS, ENTITY_TABLE, FIELD_ENTITIES, KEY_COLUMNS, MODALITIES
from memf.simulate.worlds import WORLDS

#: Entities whose contribution to log(sales) has its own standard deviation in ``effects``.
EFFECT_KEYS: tuple[str, ...] = ("anchor", "commodity", "room", "video", "audio", "interaction", "noise")
#: Defect switches, each a fraction of the objects it applies to.
DEFECT_KEYS: tuple[str, ...] = (
    "missing_modality", "corrupt_image", "truncated_video", "corrupt_audio", "no_audio_stream",
)
#: Defect switches that damage media files: they must be 0 when no media are written (``media: false``).
MEDIA_DEFECT_KEYS: tuple[str, ...] = ("corrupt_image", "truncated_video", "corrupt_audio", "no_audio_stream")


@dataclass(frozen=True)
class VideoSettings:
    frames: int
    size: int
    fps: int


@dataclass(frozen=True)
class AudioSettings:
    seconds: float
    sample_rates: tuple[int, ...]


@dataclass(frozen=True)
class SimulatorConfig:
    """Typed copy of the ``simulator`` config section. Build it with :meth:`from_dict`."""

    seed: int
    n_streams: int
    n_anchors: int
    items_per_stream: tuple[int, int]
    clips_per_stream: tuple[int, int]
    image_size: int
    video: VideoSettings
    audio: AudioSettings
    effects: dict[str, float]
    log_sales_mean: float
    defects: dict[str, float]
    world: str  # a key of worlds.WORLDS
    worlds: dict[str, dict[str, float]]  # world -> its settings (defaults filled in), for every world with settings
    media: bool = True  # False: tables, truth and latents only (no images or clips rendered, no media columns)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> SimulatorConfig:
        """Check every key of the ``simulator`` section and convert it.

        Raises:
            ValueError: a key is missing, unknown, or out of range; the message names the key.
        """
        required = {
            "seed", "n_streams", "n_anchors", "items_per_stream", "clips_per_stream", "image_size", "video",
            "audio", "effects", "log_sales_mean", "defects",
        }
        _check_keys("simulator", cfg, required, optional={"world", "worlds", "media"})
        video = cfg["video"]
        _check_keys("simulator.video", video, {"frames", "size", "fps"})
        audio = cfg["audio"]
        _check_keys("simulator.audio", audio, {"seconds", "sample_rates"})
        _check_keys("simulator.effects", cfg["effects"], set(EFFECT_KEYS))
        _check_keys("simulator.defects", cfg["defects"], set(DEFECT_KEYS))

        out = cls(
            seed=int(cfg["seed"]),
            n_streams=_positive_int("simulator.n_streams", cfg["n_streams"]),
            n_anchors=_positive_int("simulator.n_anchors", cfg["n_anchors"]),
            items_per_stream=_int_range("simulator.items_per_stream", cfg["items_per_stream"]),
            clips_per_stream=_int_range("simulator.clips_per_stream", cfg["clips_per_stream"]),
            image_size=_positive_int("simulator.image_size", cfg["image_size"]),
            video=VideoSettings(
                frames=_positive_int("simulator.video.frames", video["frames"]),
                size=_positive_int("simulator.video.size", video["size"]),
                fps=_positive_int("simulator.video.fps", video["fps"]),
            ),
            audio=AudioSettings(
                seconds=float(audio["seconds"]),
                sample_rates=tuple(_positive_int("simulator.audio.sample_rates", r) for r in audio["sample_rates"]),
            ),
            effects={k: float(cfg["effects"][k]) for k in EFFECT_KEYS},
            log_sales_mean=float(cfg["log_sales_mean"]),
            defects={k: float(cfg["defects"][k]) for k in DEFECT_KEYS},
            world=str(cfg.get("world", "default")),
            worlds=_world_settings(cfg.get("worlds", {})),
            media=_boolean("simulator.media", cfg.get("media", True)),
        )
        if out.world not in WORLDS:
            raise ValueError(f"simulator.world: {out.world!r}, expected one of {list(WORLDS)}")
        if out.image_size < 16:
            raise ValueError(f"simulator.image_size: {out.image_size}, expected >= 16")
        if out.video.size < 16 or out.video.size % 2:
            raise ValueError(f"simulator.video.size: {out.video.size}, expected an even number >= 16 (H.264 4:2:0)")
        if out.audio.seconds <= 0:
            raise ValueError(f"simulator.audio.seconds: {out.audio.seconds}, expected > 0")
        if not out.audio.sample_rates:
            raise ValueError("simulator.audio.sample_rates: empty, expected at least one rate")
        for key, sd in out.effects.items():
            if sd < 0:
                raise ValueError(f"simulator.effects.{key}: {sd}, expected >= 0")
        for key, frac in out.defects.items():
            if not 0.0 <= frac <= 1.0:
                raise ValueError(f"simulator.defects.{key}: {frac}, expected a fraction in [0, 1]")
            if not out.media and key in MEDIA_DEFECT_KEYS and frac > 0:
                raise ValueError(f"simulator.defects.{key}: {frac}, expected 0 with simulator.media: false "
                                 "(no media are written to damage)")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-able values (recorded in ``dataset.json``)."""
        out = asdict(self)
        out["items_per_stream"] = list(self.items_per_stream)
        out["clips_per_stream"] = list(self.clips_per_stream)
        out["audio"]["sample_rates"] = list(self.audio.sample_rates)
        return out


def _check_keys(where: str, obj: Any, required: set[str], optional: set[str] | frozenset[str] = frozenset()) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: got {type(obj).__name__}, expected a mapping")
    missing = sorted(required - obj.keys())
    unknown = sorted(obj.keys() - required - optional)
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}, expected only {sorted(required | optional)}")


def _world_settings(cfg: Any) -> dict[str, dict[str, float]]:
    """``simulator.worlds`` checked and completed: every world with settings gets all of them (the defaults of
    ``worlds.WORLDS`` for those left out). Each setting is a share of variance, a fraction in [0, 1]."""
    with_settings = {name: cls.defaults for name, cls in WORLDS.items() if cls.defaults}
    _check_keys("simulator.worlds", cfg, set(), optional=set(with_settings))
    out: dict[str, dict[str, float]] = {}
    for name, defaults in with_settings.items():
        given = cfg.get(name, {})
        _check_keys(f"simulator.worlds.{name}", given, set(), optional=set(defaults))
        out[name] = {key: float(given.get(key, default)) for key, default in defaults.items()}
        for key, value in out[name].items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"simulator.worlds.{name}.{key}: {value}, expected a fraction in [0, 1]")
    return out


def _boolean(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: {value!r}, expected true or false")
    return value


def _positive_int(where: str, value: Any) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{where}: {value!r}, expected a positive integer")
    return int(value)


def _int_range(where: str, value: Any) -> tuple[int, int]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"{where}: {value!r}, expected [low, high]")
    lo, hi = (_positive_int(where, v) for v in value)
    if lo > hi:
        raise ValueError(f"{where}: low {lo} > high {hi}")
    return lo, hi


def column_sources(columns: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, dict[str, str]]]:
    """Entity -> modality -> {written column: paper attribute it holds}.

    The i-th column the mapping lists for an entity and modality receives the i-th attribute of the paper's table for
    that entity and modality (``contract.DEFAULT_COLUMNS``). A mapping may list fewer columns (the remaining paper
    attributes are not generated) but not more.

    Raises:
        ValueError: more columns than the paper has attributes, an unknown entity or modality, a name that clashes
            with a key column, or a name used twice in one table.
    """
    unknown = sorted(set(columns) - set(FIELD_ENTITIES))
    if unknown:
        raise ValueError(f"columns: unknown entit(ies) {unknown}, expected among {list(FIELD_ENTITIES)}")
    out: dict[str, dict[str, dict[str, str]]] = {}
    seen: dict[str, set[str]] = {table: set(cols) for table, cols in KEY_COLUMNS.items()}
    for entity in FIELD_ENTITIES:
        by_mod = columns.get(entity, {})
        bad = sorted(set(by_mod) - set(MODALITIES))
        if bad:
            raise ValueError(f"columns.{entity}: unknown modalit(ies) {bad}, expected among {list(MODALITIES)}")
        out[entity] = {}
        table = ENTITY_TABLE[entity]
        for modality in MODALITIES:
            names = list(by_mod.get(modality, []))
            paper = DEFAULT_COLUMNS[entity][modality]
            if len(names) > len(paper):
                raise ValueError(
                    f"columns.{entity}.{modality}: {len(names)} columns, the simulator generates at most "
                    f"{len(paper)} ({paper})"
                )
            for name in names:
                if name in seen[table]:
                    raise ValueError(f"columns.{entity}.{modality}: column '{name}' is already used in table {table}")
                seen[table].add(name)
            out[entity][modality] = dict(zip(names, paper, strict=False))
    return out
