"""The endpoint-epsilon table and the intervals it implies (SiT's check_interval in paper time)."""

import pytest

from ablate.transport.defaults import (
    SDE_SINGULAR_NOISE_EPS,
    EndpointEps,
    endpoint_eps,
    sample_interval,
    train_interval,
)
from ablate.transport.interpolants import INTERPOLANTS
from ablate.transport.predictions import PREDICTIONS


@pytest.mark.parametrize("interp", sorted(INTERPOLANTS))
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_every_pair_resolves_inside_unit_interval(interp, pred):
    e = endpoint_eps(interp, pred)
    for lo, hi in (
        train_interval(interp, pred),
        sample_interval(interp, pred),
        sample_interval(interp, pred, sde=True),
        sample_interval(interp, pred, sde=True, noise_singular=True, last_step_size=0.04),
    ):
        assert 0.0 <= lo < hi <= 1.0
    assert e.train >= 0 and e.sample >= 0


def test_table_values():
    assert endpoint_eps("vp", "velocity").train == 1e-5 and endpoint_eps("vp", "noise").sample == 1e-3
    assert endpoint_eps("linear", "velocity").train == 0.0 and endpoint_eps("gvp", "score").train == 1e-3


def test_train_intervals_match_sit_check_interval():
    # SiT's VP trains on its [0, 1 - eps] = ours [eps, 1]; linear/GVP non-velocity on [eps, 1 - eps].
    assert train_interval("vp", "velocity") == (1e-5, 1.0)
    assert train_interval("linear", "score") == (1e-3, 1 - 1e-3)
    assert train_interval("gvp", "velocity") == (0.0, 1.0)
    assert train_interval("linear", "noise", eps=0.01) == (0.01, 0.99)


def test_sample_intervals():
    assert sample_interval("linear", "velocity") == (0.0, 1.0)
    assert sample_interval("linear", "velocity", sde=True, last_step_size=0.04) == (0.04, 1.0)
    lo, hi = sample_interval("gvp", "velocity", sde=True, noise_singular=True)
    assert hi == 1.0 - SDE_SINGULAR_NOISE_EPS


def test_bad_inputs():
    with pytest.raises(ValueError, match="valid choices"):
        endpoint_eps("linear", "eps")
    with pytest.raises(ValueError, match="train_eps"):
        train_interval("linear", "noise", eps=0.7)
    from ablate.transport import CustomInterpolant

    mine = CustomInterpolant(lambda t: 1 - t**2, lambda t: t, name="my_path")
    assert endpoint_eps(mine, "noise") == endpoint_eps(mine, "velocity") == EndpointEps(1e-3, 1e-3)  # conservative
    assert train_interval(mine, "velocity") == (1e-3, 1 - 1e-3)  # alpha_1 = 0: open at the noise end too
    with pytest.raises(ValueError, match="unknown interpolant 'my_path'.*valid choices"):
        endpoint_eps("my_path", "noise")  # a name must be registered (a CustomInterpolant is passed as an object)
