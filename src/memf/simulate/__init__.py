"""A live-commerce simulator: a raw dataset in the documented format (docs/data-format.md) with known ground truth.

``simulate(root, cfg, columns)`` writes tables, media and ground truth (``write_tables`` and ``render_shard`` are
its two phases, the workflow's jobs; ``simulator.media: false`` writes the tables without media columns and renders
nothing); ``simulate_latents(cfg)`` draws the same world as arrays; ``read_latents(root)`` reads a dataset's true
latent factors. ``simulator.world`` picks the world (memf.simulate.worlds). The generative model is documented in
docs/simulator.md.
"""

from memf.simulate.factors import read_latents
from memf.simulate.params import SimulatorConfig, column_sources
from memf.simulate.truth import World, simulate_latents
from memf.simulate.writer import (
    RenderSummary,
    SimulationSummary,
    render_record_path,
    render_shard,
    simulate,
    write_tables,
)

__all__ = ["RenderSummary", "SimulationSummary", "SimulatorConfig", "World", "column_sources", "read_latents",
           "render_record_path", "render_shard", "simulate", "simulate_latents", "write_tables"]
