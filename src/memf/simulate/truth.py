"""The ground truth of one simulated world: contributions to log(sales), noise, sales, oracle R^2 and importance.

:func:`simulate_latents` draws the latents (memf.simulate.latent), lets the configured world add its own
(memf.simulate.worlds), and turns them into sales; it is the fast path used to check the target's distribution on
thousands of streams, and :mod:`memf.simulate.writer` renders the same world to media.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sklearn.metrics import r2_score

from memf.simulate.factors import FACTORS, latent_factors, latent_routing
from memf.simulate.latent import (
    CONTRIBUTIONS,
    COUPLING,
    Latents,
    calibration,
    draw_latents,
    population_variance,
    raw_contributions,
)
from memf.simulate.params import SimulatorConfig
from memf.simulate.worlds import WORLDS, WorldModel, describe, signal_calibration, world_rng

#: Entities credited in ``entity_covariance_share``.
ENTITIES: tuple[str, ...] = ("anchor", "commodity", "room", "video", "audio")


@dataclass(frozen=True)
class World:
    """Latents plus the ground truth of one simulated dataset (no media)."""

    config: SimulatorConfig
    model: WorldModel
    latents: Latents
    contributions: dict[str, np.ndarray]  # name -> [S]: the six default ones, then the world's signal if any
    effects: dict[str, float]  # population sd of each contribution (and of the noise) in this world
    noise: np.ndarray  # [S]
    calibration: dict[str, tuple[float, float]]  # raw contribution -> population (mean, sd)

    @property
    def expected_log_sales(self) -> np.ndarray:
        """[S] noiseless log(sales + 1)."""
        return self.config.log_sales_mean + sum(self.contributions.values())

    @property
    def log_sales(self) -> np.ndarray:
        """[S] expected + noise, before rounding to whole sales."""
        return self.expected_log_sales + self.noise

    @property
    def sales(self) -> np.ndarray:
        """[S] float64 sales: round(exp(log_sales) - 1), clipped at 0."""
        return np.maximum(np.round(np.expm1(self.log_sales)), 0.0)

    @property
    def target(self) -> np.ndarray:
        """[S] log(sales + 1), the pipeline's target."""
        return np.log1p(self.sales)

    def ground_truth_table(self, stream_ids: list[str]) -> pa.Table:
        cols: dict[str, pa.Array] = {
            "stream_id": pa.array(stream_ids, pa.string()),
            "expected_log_sales": pa.array(self.expected_log_sales, pa.float64()),
        }
        for name, values in self.contributions.items():
            cols[f"contrib_{name}"] = pa.array(values, pa.float64())
        cols["noise"] = pa.array(self.noise, pa.float64())
        cols["log_sales"] = pa.array(self.log_sales, pa.float64())
        return pa.table(cols)

    def report(self) -> dict[str, object]:
        """Effect sizes, target statistics, oracle R^2, the true importance of each entity, the world and its
        latent factors."""
        expected = self.expected_log_sales
        target = self.target
        centred = expected - expected.mean()
        var = {name: float(np.var(values)) for name, values in self.contributions.items()}
        total_var = sum(var.values())
        var_expected = float(np.var(expected))
        cov_share = {
            name: float(np.mean((values - values.mean()) * centred) / var_expected) if var_expected > 0 else 0.0
            for name, values in self.contributions.items()
        }
        entity_cov = {name: cov_share[name] for name in ENTITIES}
        credit = {"interaction": {"anchor": 0.5, "commodity": 0.5}, **self.model.credit()}
        for name, shares in credit.items():
            for entity, share in shares.items():
                entity_cov[entity] += cov_share[name] * share
        return {
            "effects": dict(self.effects),
            "log_sales_mean": self.config.log_sales_mean,
            "coupling": COUPLING,
            "calibration": {name: {"mean": m, "sd": sd} for name, (m, sd) in self.calibration.items()},
            "n_streams": self.latents.n_streams,
            "oracle_r2": float(r2_score(target, expected)) if len(target) > 1 else None,
            "target": _stats(target),
            "expected_log_sales": _stats(expected),
            "contribution_sd": {name: math.sqrt(v) for name, v in var.items()},
            "importance": {
                "variance_share": {name: (v / total_var if total_var > 0 else 0.0) for name, v in var.items()},
                "covariance_share": cov_share,
                "entity_covariance_share": entity_cov,
            },
            "world": describe(self.model),
            "latent_factors": latent_factors(FACTORS + self.model.factors),
            "latent_routing": latent_routing(self.model.all_factors()),
        }


def _stats(x: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(x)), "sd": float(np.std(x, ddof=1)) if len(x) > 1 else 0.0,
        "min": float(np.min(x)), "median": float(np.median(x)), "max": float(np.max(x)),
    }


def simulate_latents(cfg: SimulatorConfig | dict) -> World:
    """Draw the latents, contributions, noise and sales of ``cfg.n_streams`` streams, without rendering media.

    The writer calls this first, so a dataset's ground truth equals ``simulate_latents`` of the same settings.
    """
    if not isinstance(cfg, SimulatorConfig):
        cfg = SimulatorConfig.from_dict(cfg)
    rng = np.random.default_rng(cfg.seed)
    lat = draw_latents(rng, cfg.n_streams, cfg.n_anchors, cfg.items_per_stream, cfg.clips_per_stream)
    noise = cfg.effects["noise"] * rng.standard_normal(cfg.n_streams)
    model = WORLDS[cfg.world](cfg.worlds.get(cfg.world))
    lat = model.extend(world_rng(cfg.seed, model), lat)

    cal = dict(calibration(cfg.items_per_stream, cfg.clips_per_stream))
    scale = math.sqrt(1.0 - model.share)  # the world's signal takes its share of the variance from the others
    effects = {name: cfg.effects[name] * scale for name in CONTRIBUTIONS}
    raw = raw_contributions(lat)
    contributions = {name: effects[name] * (raw[name] - cal[name][0]) / cal[name][1] for name in CONTRIBUTIONS}
    signal_cal = signal_calibration(cfg.world, cfg.items_per_stream, cfg.clips_per_stream)
    for name, values in model.signals(lat).items():
        v0 = population_variance(cfg.items_per_stream, cfg.clips_per_stream,
                                 tuple(cfg.effects[n] for n in CONTRIBUTIONS))
        effects[name] = math.sqrt(model.share * v0)
        cal[name] = signal_cal[name]
        contributions[name] = effects[name] * (values - cal[name][0]) / cal[name][1]
    effects["noise"] = cfg.effects["noise"]
    return World(config=cfg, model=model, latents=lat, contributions=contributions, effects=effects, noise=noise,
                 calibration=cal)
