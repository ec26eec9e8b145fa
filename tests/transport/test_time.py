"""The time axis: what the network sees for each choice."""

import pytest
import torch

from ablate.transport.time import NETWORK_TIMES, ContinuousTime, DiscreteTime

T = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)


def echo(x, t, y=None):
    return t


@pytest.mark.parametrize("name", NETWORK_TIMES)
def test_every_choice_resolves(name):
    f = ContinuousTime(name).wrap(echo)
    expected = {"t": T, "1-t": 1 - T, "999t": 999 * T}[name]
    torch.testing.assert_close(f(None, T, None), expected)


def test_sit_time_reverses_the_convention():
    # SiT's network saw its code time 1 - t: data end (ours t = 0) is its t = 1.
    assert ContinuousTime("1-t").to_network(torch.tensor([0.0])).item() == 1.0


def test_999t_matches_ddpm_index_scale():
    idx = torch.arange(0, 1000, 111)
    torch.testing.assert_close(ContinuousTime("999t").to_network(idx / 999.0), idx.float())


def test_discrete_time_passes_integer_index():
    f = DiscreteTime(1000).wrap(lambda x, i, y: (i, y))
    i, y = f(None, torch.tensor([0, 999]), "label")
    assert i.tolist() == [0, 999] and y == "label"
    with pytest.raises(ValueError, match="out of range"):
        DiscreteTime(1000).to_network(torch.tensor([1000]))
    with pytest.raises(TypeError, match="integer"):
        DiscreteTime(1000).to_network(torch.tensor([0.5]))
    with pytest.raises(TypeError, match="float"):
        ContinuousTime().to_network(torch.tensor([1]))


def test_bad_choices():
    with pytest.raises(ValueError, match="valid choices"):
        ContinuousTime("1000t")
    with pytest.raises(ValueError, match="positive integer"):
        DiscreteTime(0)
