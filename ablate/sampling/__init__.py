"""Sampling for ablate (paper time: t = 0 data, t = 1 noise; samplers go from t_max down to t_min).

Every sampler: ``sampler(model, z, y=None, *, noise=None, generator=None, seeds=None,
return_trajectory=False) -> SampleOutput(x, nfe, trajectory, times)``. Build them with
:func:`build_sampler`; see README.md.
"""

from .base import SAMPLER_FAMILIES, Field, SampleOutput, SamplingContext  # noqa: F401
from .discrete import DiscreteSampler, as_paper_time  # noqa: F401
from .encode import EncodeOutput, RoundTripOutput, encode, round_trip  # noqa: F401
from .grids import GRIDS, time_grid  # noqa: F401
from .guidance import Guidance, guided  # noqa: F401
from .likelihood import DIVERGENCES, NLLOutput, nll, prior_logp, with_divergence  # noqa: F401
from .nfe import NFECounter  # noqa: F401
from .noise import PerImageNoise, image_generator, per_image_noise, step_noise_source  # noqa: F401
from .ode import ADAPTIVE_METHODS, ODE_METHODS, ODESampler  # noqa: F401
from .registry import DEFAULT_STEPS, SAMPLERS, build_sampler  # noqa: F401
from .sde import LAST_STEPS, SDE_METHODS, SDESampler  # noqa: F401
