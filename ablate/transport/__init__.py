"""The math of ablate, pure torch (no Lightning/Hydra imports). Paper time: t = 0 data, t = 1 noise.

See README.md in this folder for the contract, the public API and how to add a choice.
"""

from .ddpm import GaussianDiffusion, build_ddpm, linear_betas, space_timesteps  # noqa: F401
from .ddpm_bound import calc_bpd_loop, prior_bpd  # noqa: F401
from .defaults import EndpointEps, endpoint_eps, sample_interval, train_interval  # noqa: F401
from .diffusion import DIFFUSIONS, SIT_FORMS, Diffusion, from_sit, get_diffusion  # noqa: F401
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
from .loss import (  # noqa: F401
    TIME_DENSITIES,
    WEIGHTINGS,
    LogitNormalTime,
    Objective,
    UniformTime,
    build_objective,
    loss_weight,
    prediction_weight,
)
from .predictions import PREDICTIONS, EndpointError, convert, from_x0_eps, to_x0_eps  # noqa: F401
from .time import NETWORK_TIMES, ContinuousTime, DiscreteTime  # noqa: F401
