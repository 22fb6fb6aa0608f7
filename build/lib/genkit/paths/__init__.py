"""Gaussian paths x_t = alpha(t) x0 + sigma(t) eps: DDPM's discrete chain, the score-SDEs and
rectified flow, all on one interface (see `genkit.paths.base`)."""
from genkit.paths.base import PREDICTIONS, GaussianPath, _bcast
from genkit.paths.discrete import DiscreteVPPath
from genkit.paths.flow import FlowPath
from genkit.paths.sde import SubVPPath, VEPath, VPPath

__all__ = ["PREDICTIONS", "DiscreteVPPath", "FlowPath", "GaussianPath", "SubVPPath", "VEPath", "VPPath", "_bcast"]
