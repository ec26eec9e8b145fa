"""Adding a choice to an axis is one class + one YAML (+ its test), with nothing else to edit: shown here with a
test-only interpolant, SDE coefficient and sampler family, each defined in this file, its config group file
written to a folder on Hydra's search path, then composed, built, trained and evaluated end to end."""

import math
import textwrap

import pytest
import torch

from ablate.sampling.base import BaseSampler, SampleOutput, SamplingContext
from ablate.transport.diffusion import Diffusion
from ablate.transport.interpolants import Interpolant


def _define() -> dict:
    """The three new choices, as a user's module would define them: defining each class registers it."""

    class Cosine2(Interpolant):
        """A test-only path: alpha_t = cos^2(pi t / 2), sigma_t = sin(pi t / 2) (alpha_1 = 0 like GVP)."""

        name = "test_cosine2"

        def alpha(self, t):
            return torch.cos(math.pi * t / 2) ** 2

        def sigma(self, t):
            return torch.sin(math.pi * t / 2)

        def d_alpha(self, t):
            return -math.pi * torch.cos(math.pi * t / 2) * torch.sin(math.pi * t / 2)

        def d_sigma(self, t):
            return math.pi / 2 * torch.cos(math.pi * t / 2)


    class HalfSigma(Diffusion):
        """A test-only SDE coefficient: w_t = norm * sigma_t / 2."""

        name = "test_half_sigma"

        def w(self, t):
            return self.norm * self.interpolant.sigma(t) / 2


    class EulerOnly(BaseSampler):
        """A test-only sampler family: Euler on the probability-flow ODE, its own grid of ``steps`` points."""

        family = "test_euler"
        time_kind = "continuous"

        @classmethod
        def build(cls, ctx: SamplingContext, steps: int = 4) -> "EulerOnly":
            from ablate.sampling.ode import ODESampler

            return cls(ODESampler(ctx.interpolant, ctx.prediction, "euler", steps, sample_eps=ctx.sample_eps,
                                  **ctx.guidance), **ctx.guidance)

        def __init__(self, ode, **guidance):
            super().__init__(**guidance)
            self.ode, self.steps, self.name = ode, ode.steps, "test_euler"

        @property
        def expected_nfe(self):
            return self.steps

        @property
        def tag(self):
            return f"test_euler-nfe{self.steps}-cfg{self.guidance_scale}"

        def __call__(self, model, z, y=None, **kw) -> SampleOutput:
            return self.ode(model, z, y, **kw)

    return {"Cosine2": Cosine2, "HalfSigma": HalfSigma, "EulerOnly": EulerOnly}


@pytest.fixture(scope="module", autouse=True)
def new_choices():
    """Defines the classes when this module's tests run (not at import: collection would register them for every
    test of the session), exposes them where the YAMLs' ``_target_`` finds them, and unregisters them after."""
    from ablate.sampling import SAMPLER_FAMILIES
    from ablate.transport import DIFFUSIONS, INTERPOLANTS

    classes = _define()
    globals().update(classes)
    yield classes
    for name in classes:
        globals().pop(name, None)
    INTERPOLANTS.pop("test_cosine2", None)
    DIFFUSIONS.pop("test_half_sigma", None)
    SAMPLER_FAMILIES.pop("test_euler", None)


YAMLS = {
    "interpolant/test_cosine2.yaml": f"_target_: {__name__}.Cosine2\n",
    "sde_coef/test_half_sigma.yaml": f"_target_: {__name__}.HalfSigma\n_partial_: true\nnorm: 1.0\n",
    "sampler/test_euler.yaml": f"_target_: {__name__}.EulerOnly.build\n_partial_: true\nsteps: 3\n",
}
FAST = ["model.depth=2", "model.hidden_size=64", "model.num_heads=2", "logger=none", "trainer.batch_size=32",
        "trainer.steps=2", "eval.num_samples=20", "eval.batch_size=20", "trainer.precision=32-true"]


@pytest.fixture
def extra_conf(tmp_path):
    for rel, text in YAMLS.items():
        (tmp_path / "conf" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "conf" / rel).write_text(textwrap.dedent(text))
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def test_the_classes_registered_themselves(new_choices):
    from ablate.sampling import SAMPLER_FAMILIES
    from ablate.transport import DIFFUSIONS, INTERPOLANTS, get_diffusion, get_interpolant

    Cosine2, HalfSigma, EulerOnly = (new_choices[k] for k in ("Cosine2", "HalfSigma", "EulerOnly"))
    assert INTERPOLANTS["test_cosine2"] is Cosine2 and isinstance(get_interpolant("test_cosine2"), Cosine2)
    assert DIFFUSIONS["test_half_sigma"] is HalfSigma
    assert isinstance(get_diffusion("test_half_sigma", Cosine2()), HalfSigma)
    assert SAMPLER_FAMILIES["test_euler"] is EulerOnly


def test_a_new_interpolant_coefficient_and_sampler_family_run_end_to_end(compose, extra_conf, tmp_path):
    from ablate.pipeline.build import build_experiment
    from ablate.pipeline.runner import run

    cfg = compose([extra_conf, "interpolant=test_cosine2", "sampler=sde", "sde_coef=test_half_sigma",
                   "sampler.nfe=4", f"out_dir={tmp_path / 'out'}", *FAST])
    exp = build_experiment(cfg)
    assert exp.interpolant.name == "test_cosine2" and exp.axes()["sde_coef"] == "test_half_sigma"
    assert exp.sampler.tag == "sde_em-test_half_sigma-nfe4-cfg1.0"
    (row,) = run(cfg, job_dir=tmp_path / "job")["rows"]
    assert row["interpolant"] == "test_cosine2" and row["sde_coef"] == "test_half_sigma" and row["nfe"] == 4

    cfg = compose([extra_conf, "interpolant=test_cosine2", "sampler=test_euler", f"out_dir={tmp_path / 'out'}",
                   *FAST])
    exp = build_experiment(cfg)
    assert exp.sampler.describe()["sampler"] == "test_euler" and exp.sampler.expected_nfe == 3
    (row,) = run(cfg, job_dir=tmp_path / "job2")["rows"]
    assert row["sampler"] == "test_euler" and row["nfe"] == 3 and row["reused_checkpoint"]  # same training
