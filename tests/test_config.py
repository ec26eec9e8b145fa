"""Every config composes, every axis value resolves, bad values and combinations fail before any work."""

from pathlib import Path

import pytest

from ablate.build import ConfigError, axes, train_key, validate

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

GROUPS = ["time", "prediction", "interpolant", "weighting", "time_density", "sampler", "diffusion", "guidance",
          "model", "data", "trainer", "eval", "logger"]


def _options(group):
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def _valid_context(group, option):
    """Overrides that make `group=option` a valid combination."""
    if group == "time" and option == "discrete" or group == "sampler" and option in ("ddpm", "ddim"):
        return ["time=discrete", "prediction=noise", "interpolant=vp", "sampler=ddpm"]
    if group == "weighting" and option != "none":
        return ["prediction=score"]
    if group == "guidance" and option != "none":
        return []
    if group == "data" and option in ("image_folder", "latents"):
        return ["data.root=/nonexistent"] + (["data.reference_root=/nonexistent"] if option == "latents" else [])
    return []


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_axis_value_composes_and_validates(compose, group, option):
    cfg = compose(_valid_context(group, option) + [f"{group}={option}"])
    validate(cfg)
    a = axes(cfg)
    assert a["sampler_tag"]
    assert len(train_key(cfg)) == 12


def test_every_interpolant_target_resolves(compose):
    from hydra.utils import instantiate

    from ablate.transport import Interpolant

    for name in _options("interpolant"):
        obj = instantiate(compose([f"interpolant={name}"]).interpolant)
        assert isinstance(obj, Interpolant) and obj.name == name


def test_every_model_preset_resolves(compose):
    from ablate.models.registry import available_models

    names = set(available_models())
    for option in _options("model"):
        assert compose([f"model={option}"]).model.name in names


def test_every_sampler_and_diffusion_resolves(compose):
    from ablate.transport.diffusion import DIFFUSIONS

    for option in _options("diffusion"):
        assert compose([f"diffusion={option}"]).diffusion.name in DIFFUSIONS


def test_unknown_axis_value_names_the_valid_choices(compose):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as e:
        compose(["interpolant=cosine"])
    assert "interpolant" in str(e.value) and "linear" in str(e.value) and "gvp" in str(e.value)


@pytest.mark.parametrize(
    "overrides,words",
    [
        (["time=discrete"], ["time=discrete", "prediction=noise", "interpolant=vp"]),
        (["sampler=ddpm"], ["time=continuous", "ddpm"]),
        (["prediction=velocity", "weighting=likelihood"], ["weighting=likelihood", "velocity"]),
        (["sampler.steps=-5"], ["sampler.steps", "-5"]),
        (["guidance=cfg", "guidance.scale=-1"], ["guidance.scale", "-1"]),
        (["train_eps=0.7"], ["train_eps", "0.7", "[0, 0.5)"]),
        (["sample_eps=-0.1"], ["sample_eps"]),
        (["trainer.devices=3"], ["batch_size=128", "3"]),
        (["trainer.nan_policy=ignore"], ["nan_policy", "ignore", "stop"]),
        (["guidance=cfg", "model.class_dropout_prob=0"], ["guidance.scale", "class dropout"]),
        (["time.network_time=seconds"], ["network_time", "seconds", "1-t"]),
        (["data=image_folder"], ["data.root"]),
        (["data=latents", "data.root=/x"], ["data.reference_root"]),
    ],
)
def test_bad_values_and_combinations_fail_with_names(compose, overrides, words):
    cfg = compose(overrides)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_train_key_ignores_sampling_axes_and_tracks_training_axes(compose):
    base = train_key(compose([]))
    for o in (["sampler=sde"], ["diffusion=sigma"], ["sampler.steps=10"], ["guidance=cfg"], ["eval.num_samples=7"],
              ["trainer.ckpt_every=3"]):
        assert train_key(compose(o)) == base, o
    for o in (["interpolant=vp"], ["prediction=score"], ["seed=1"], ["trainer.steps=7"],
              ["model.class_dropout_prob=0.2"], ["train_eps=0.01"]):
        assert train_key(compose(o)) != base, o


def test_axes_are_flat_and_complete(compose):
    a = axes(compose(["sampler=sde", "diffusion=sigma"]))
    assert all(not isinstance(v, (dict, list)) for v in a.values())
    for k in ("time", "prediction", "interpolant", "sampler", "solver", "diffusion", "guidance", "model", "data"):
        assert k in a
    assert a["diffusion"] == "sigma" and a["sampler_tag"].startswith("sde_em-sigma")
    assert axes(compose(["sampler=ode"]))["diffusion"] is None
