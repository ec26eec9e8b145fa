"""The endpoint audit: every path coefficient, prediction conversion, ODE field, SDE drift, diffusion
coefficient and loss weight at t = 0 and t = 1 of every interpolant does what the table in
ablate/transport/README.md says: a finite value (the limit from inside; the documented expression where one is
given), EndpointError, or a documented infinity. Never NaN, never an undocumented inf."""

import itertools
import math
import re
from pathlib import Path

import pytest
import torch

from ablate.sampling import ODESampler, SDESampler
from ablate.transport import EndpointError, get_interpolant
from ablate.transport.diffusion import DIFFUSIONS, SIT_FORMS, get_diffusion
from ablate.transport.loss import loss_weight, prediction_weight
from ablate.transport.predictions import PREDICTIONS, convert, from_x0_eps, to_x0_eps

F64 = torch.float64
B = 3
_g = torch.Generator().manual_seed(0)
X = torch.randn(B, 2, dtype=F64, generator=_g)  # x_t
P = torch.randn(B, 2, dtype=F64, generator=_g)  # the prediction (eps for from_x0_eps)
ETA, LOSS = 0.1, 0.5
COLUMNS = [(name, end) for name in ("linear", "gvp", "vp") for end in (0.0, 1.0)]
README = Path(__file__).resolve().parents[2] / "ablate" / "transport" / "README.md"


def _tt(t):
    return torch.full((B,), t, dtype=F64)


def _const(ip, t):
    return lambda x, tq, y=None: P


def _quantities():
    q = {}
    for name in ("alpha", "sigma", "d_alpha", "d_sigma", "sigma_d_sigma", "lambda_", "d_log_alpha"):
        q[name] = lambda ip, t, name=name: getattr(ip, name)(_tt(t))
    for s, d in itertools.permutations(PREDICTIONS, 2):
        q[f"convert {s} -> {d}"] = lambda ip, t, s=s, d=d: convert(P, s, d, X, ip(_tt(t)).like(X))
    for k in PREDICTIONS:
        q[f"to_x0_eps {k}"] = lambda ip, t, k=k: to_x0_eps(k, P, X, ip(_tt(t)).like(X))
        q[f"from_x0_eps {k}"] = lambda ip, t, k=k: from_x0_eps(k, X, P, ip(_tt(t)).like(X))
        q[f"ode field {k}"] = lambda ip, t, k=k: ODESampler(ip, k, "euler", 1, t_min=0.2, t_max=0.8).velocity(
            _const(ip, t), X, _tt(t), None
        )
        for w in ("w_kl", "constant"):
            sde = lambda ip, k=k, w=w: SDESampler(ip, k, get_diffusion(w, ip), "em", 4, last_step="none",
                                                  t_min=0.2, t_max=0.8)
            q[f"sde drift {k} {w}"] = lambda ip, t, sde=sde: sde(ip).drift(_const(ip, t), X, _tt(t))[0]
    for name in DIFFUSIONS:
        kw = dict(eta=ETA, loss=LOSS) if name == "w_kl_eta" else {}
        q[f"w {name}"] = lambda ip, t, name=name, kw=kw: get_diffusion(name, ip, 1.0, **kw)(_tt(t))
        q[f"w/sigma {name}"] = lambda ip, t, name=name, kw=kw: get_diffusion(name, ip, 1.0, **kw).w_over_sigma(
            _tt(t)
        )
    for form in sorted(set(SIT_FORMS.values())):
        q[f"w sit:{form}"] = lambda ip, t, form=form: get_diffusion(f"sit:{form}", ip, 1.0)(_tt(t))
        q[f"w/sigma sit:{form}"] = lambda ip, t, form=form: get_diffusion(f"sit:{form}", ip, 1.0).w_over_sigma(
            _tt(t)
        )
    for w in ("none", "velocity", "likelihood"):
        q[f"weight {w}"] = lambda ip, t, w=w: loss_weight(ip, w, _tt(t))
    for w in ("velocity", "likelihood"):
        q[f"weight x0 {w}"] = lambda ip, t, w=w: prediction_weight(ip, "x0", w, _tt(t))
    return q


QUANTITIES = _quantities()


def _table():
    rows = {}
    section = README.read_text().split("## Endpoints", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        m = re.match(r"\| `([^`]+)` \|(.*)\|\s*$", line)
        if m:
            cells = [c.strip() for c in m.group(2).split("|")]
            assert len(cells) == len(COLUMNS), line
            rows[m.group(1)] = cells
    return rows


TABLE = _table()
CASES = [(row, i) for row in QUANTITIES for i in range(len(COLUMNS))]


def test_table_documents_every_quantity():
    assert set(TABLE) == set(QUANTITIES)


def _values(out):
    return torch.cat([o.flatten() for o in out]) if isinstance(out, tuple) else out.flatten()


def _expected(cell, out):
    """The documented expression, evaluated with x = X, p = P and broadcast like the quantity."""
    val = eval(cell, dict(x=X, p=P, pi=math.pi, exp=math.exp, sqrt=math.sqrt, eta=ETA, L=LOSS))
    vals, outs = (val, out) if isinstance(out, tuple) else ((val,), (out,))
    parts = [torch.broadcast_to(torch.as_tensor(v, dtype=F64), o.shape) for v, o in zip(vals, outs, strict=True)]
    return torch.cat([v.flatten() for v in parts])


@pytest.mark.parametrize("row,col", CASES, ids=[f"{r}|{COLUMNS[c][0]}@{COLUMNS[c][1]:g}" for r, c in CASES])
def test_endpoint_behaviour_is_the_documented_one(row, col):
    name, end = COLUMNS[col]
    cell, f, ip = TABLE[row][col], QUANTITIES[row], get_interpolant(name)
    if cell == "E":
        with pytest.raises(EndpointError):
            f(ip, end)
        return
    out = f(ip, end)
    got = _values(out)
    assert not torch.isnan(got).any(), f"{row} is NaN at {name} t={end:g}"
    inside = _values(f(ip, 1e-12 if end == 0.0 else 1 - 1e-12))
    if cell in ("+inf", "-inf"):
        assert (got == float(cell)).all(), got
        assert (inside.abs() > 1e4).all() and (inside.sign() == got.sign()).all(), inside  # genuinely infinite
        return
    assert torch.isfinite(got).all(), f"{row} = {got.tolist()} at {name} t={end:g}, documented {cell!r}"
    torch.testing.assert_close(got, inside, rtol=1e-5, atol=1e-5)  # the value at the end is the limit
    if cell != "finite":
        torch.testing.assert_close(got, _expected(cell, out), rtol=1e-12, atol=1e-14)
