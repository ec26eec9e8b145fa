"""The math of ablate, pure torch (no Lightning/Hydra imports). Paper time: t = 0 data, t = 1 noise."""

from .interpolants import (  # noqa: F401
    GVP,
    INTERPOLANTS,
    VP,
    CustomInterpolant,
    Interpolant,
    Linear,
    PathCoefficients,
    expand_like,
    get_interpolant,
)
from .predictions import PREDICTIONS, EndpointError, convert, from_x0_eps, to_x0_eps  # noqa: F401
