"""A live-commerce simulator: a raw dataset in the documented format (docs/data-format.md) with known ground truth.

``simulate(root, cfg, columns)`` writes tables, media and ground truth; ``simulate_latents(cfg)`` draws the same
world without media; ``read_latents(root)`` reads a dataset's true latent factors. ``simulator.world`` picks the
world (memf.simulate.worlds). The generative model is documented in docs/simulator.md.
"""

from memf.simulate.factors import read_latents
from memf.simulate.truth import World, simulate_latents
from memf.simulate.params import SimulatorConfig, column_sources
from memf.simulate.writer import SimulationSummary, simulate

__all__ = ["SimulationSummary", "SimulatorConfig", "World", "column_sources", "read_latents", "simulate",
           "simulate_latents"]
