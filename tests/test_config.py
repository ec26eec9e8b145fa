"""Every config composes and builds, every axis value resolves to its owner, bad values and combinations fail
before any work with the axis, the value and the valid choices."""

from pathlib import Path

import pytest

from ablate.pipeline.build import ConfigError, build_experiment

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

GROUPS = ["time", "prediction", "interpolant", "weighting", "time_density", "sampler", "sde_coef", "guidance",
          "model", "data", "trainer", "eval", "logger"]


def _options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _valid_context(group, option):
    """Overrides that make `group=option` a valid combination."""
    if group == "time" and option == "discrete" or group == "sampler" and option in ("ddpm", "ddim"):
        return ["time=discrete", "prediction=noise", "interpolant=vp", "sampler=ddpm"]
    if group == "weighting" and option != "none":
        return ["prediction=score"]
    if group == "data" and option in ("image_folder", "latents"):
        return ["data.root=/nonexistent", "model=dit-s2"] + (["data.reference_root=/nonexistent"]
                                                            if option == "latents" else [])
    if group == "data" and option in ("fashion", "mnist5k"):
        return []
    if group == "model" and option != "tiny":
        return ["data=latents", "data.root=/x", "data.reference_root=/y"]
    if group == "eval" and option == "paper":
        return ["eval.reference=/nonexistent/VIRTUAL_imagenet256_labeled.npz"]
    if group == "trainer" and option in ("gpu", "paper"):
        return ["trainer.precision=32-true"]  # keep the build independent of this machine's GPU
    return []


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_axis_value_composes_and_builds(compose, group, option):
    if group == "trainer" and option == "paper":
        pytest.skip("trainer=paper uses devices=auto and strategy=ddp: built in test_paper_scale_rows_build")
    exp = build_experiment(compose(_valid_context(group, option) + [f"{group}={option}"]))
    a = exp.axes()
    assert a["sampler_tag"] and len(exp.train_key) == 12
    assert all(not isinstance(v, (dict, list)) for v in a.values())


def test_every_option_names_its_owner_and_the_owner_names_itself_back(compose):
    """Each YAML file's stem is the name its built object reports: one list of choices, the classes."""
    from hydra.utils import instantiate

    from ablate.transport import DIFFUSIONS, INTERPOLANTS

    for name in _options("interpolant"):
        obj = instantiate(compose([f"interpolant={name}"]).interpolant)
        assert obj.name == name and INTERPOLANTS[name] is type(obj)
    assert set(_options("interpolant")) == set(INTERPOLANTS)
    for name in _options("sde_coef"):
        coef = instantiate(compose([f"sde_coef={name}"]).sde_coef)
        assert coef.func.name == name and DIFFUSIONS[name] is coef.func
    assert set(_options("sde_coef")) == set(DIFFUSIONS)
    for name in _options("sampler"):
        exp = build_experiment(compose(_valid_context("sampler", name) + [f"sampler={name}"]))
        assert exp.sampler.describe()["sampler"] == name
    for name in _options("prediction"):
        assert instantiate(compose([f"prediction={name}"]).prediction) == name
    for name in _options("time"):
        assert instantiate(compose([f"time={name}"]).time).kind == name


def test_every_model_preset_resolves(compose):
    from ablate.models.registry import available_models

    names = set(available_models())
    for option in _options("model"):
        assert compose([f"model={option}"]).model.name in names


def test_unknown_axis_value_names_the_valid_choices(compose):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as e:
        compose(["interpolant=cosine"])
    assert "interpolant" in str(e.value) and "linear" in str(e.value) and "gvp" in str(e.value)


@pytest.mark.parametrize(
    "overrides,words",
    [
        (["time=discrete"], ["time=discrete", "prediction=noise", "interpolant=vp", "got prediction=velocity"]),
        (["sampler=ddpm"], ["sampler=ddpm", "discrete", "time=continuous"]),
        (["prediction=velocity", "weighting=likelihood"], ["weighting=likelihood", "velocity"]),
        (["sampler.steps=-5"], ["steps", "-5"]),
        (["sampler.solver=heum"], ["sampler.solver='heum'", "valid choices", "heun", "dopri5"]),
        (["sampler=sde", "sampler.solver=rk4"], ["sampler.solver='rk4'", "em"]),
        (["sampler.nfe=0"], ["sampler.nfe", "0"]),
        (["sampler=sde", "sampler.last_step=final"], ["sampler.last_step", "final", "tweedie"]),
        (["guidance=cfg", "guidance.scale=-1"], ["guidance.scale", "-1"]),
        (["train_eps=0.7"], ["train_eps", "0.7", "[0, 0.5)"]),
        (["sample_eps=-0.1"], ["sample_eps"]),
        (["trainer.devices=3"], ["batch_size=128", "3"]),
        (["trainer.nan_policy=ignore"], ["nan_policy", "ignore", "stop"]),
        (["trainer.precision=fp8"], ["trainer.precision", "fp8", "bf16-mixed"]),
        (["guidance=cfg", "model.class_dropout_prob=0"], ["guidance.scale", "class dropout"]),
        (["time.network_time=seconds"], ["network_time", "seconds", "1-t"]),
        (["data=image_folder"], ["data=image_folder", "data.root"]),
        (["data=latents", "data.root=/x", "model=dit-s2"], ["data.reference_root"]),
        (["data=latents", "data.root=LATENTS_FILE", "data.reference_root=/y", "model=dit-s2"],
         ["data.root=LATENTS_FILE", "placeholder"]),
        (["eval.seeds=[0,0]"], ["eval.seeds", "duplicates"]),
        (["+model.depth_typo=3"], ["depth_typo", "valid arguments"]),
        (["logger.mode=live"], ["logger.mode", "live", "offline"]),
        (["model.input_size=16"], ["model tiny-8", "1x16x16", "data=digits", "1x8x8"]),
    ],
)
def test_bad_values_and_combinations_fail_with_names(compose, overrides, words):
    cfg = compose(overrides)
    with pytest.raises(ConfigError) as e:
        build_experiment(cfg)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def _key(compose, overrides):
    return build_experiment(compose(overrides)).train_key


def test_train_key_ignores_sampling_axes_and_tracks_training_axes(compose):
    base = _key(compose, [])
    for o in (["sampler=sde"], ["sde_coef=sigma"], ["sampler.steps=10"], ["sampler.nfe=20"], ["guidance=cfg"],
              ["eval.num_samples=7"], ["eval.seeds=[1,2]"], ["trainer.ckpt_every=3"], ["logger=none"]):
        assert _key(compose, o) == base, o
    for o in (["interpolant=vp"], ["prediction=score"], ["seed=1"], ["trainer.steps=7"],
              ["trainer.precision=32-true"], ["model.class_dropout_prob=0.2"], ["train_eps=0.01"],
              ["time_density=logit_normal"],
              ["model.depth=3"]):
        assert _key(compose, o) != base, o


def test_axes_are_flat_and_complete(compose):
    a = build_experiment(compose(["sampler=sde", "sde_coef=sigma"])).axes()
    for k in ("time", "prediction", "interpolant", "sampler", "solver", "sde_coef", "guidance", "model", "data",
              "train_steps", "batch_size", "precision", "seed", "nfe_budget"):
        assert k in a, k
    assert a["sde_coef"] == "sigma" and a["sampler_tag"].startswith("sde_em-sigma")
    assert build_experiment(compose(["sampler=ode"])).axes()["sde_coef"] is None


def test_equal_budgets_by_default_and_nfe_sets_the_steps(compose):
    """sampler.nfe=50 is 25 Heun steps, 50 Euler-Maruyama steps (mean last step included), 50 DDPM steps."""
    disc = ["time=discrete", "prediction=noise", "interpolant=vp"]
    for over, steps in ((["sampler=ode"], 25), (["sampler=ode", "sampler.solver=euler"], 50),
                        (["sampler=sde"], 50), ([*disc, "sampler=ddpm"], 50), ([*disc, "sampler=ddim"], 50)):
        s = build_experiment(compose(over)).sampler
        assert (s.steps, s.expected_nfe) == (steps, 50), over
    assert build_experiment(compose(["sampler.nfe=16"])).sampler.steps == 8
    assert build_experiment(compose(["sampler.steps=7"])).sampler.expected_nfe == 14  # steps given: steps win
    with pytest.raises(ConfigError, match="sampler.nfe=5 is not reachable"):
        build_experiment(compose(["sampler.nfe=5"]))  # Heun spends an even number


@pytest.mark.parametrize("flags, native", [("fpu sse avx2 avx512f", False), ("fpu avx512f avx512_bf16", True),
                                           ("fpu amx_tile amx_bf16 amx_int8", True), ("", False)])
def test_native_bf16_detection_reads_the_cpu_flags(tmp_path, monkeypatch, flags, native):
    from ablate.pipeline.specs import cpu_has_native_bf16

    monkeypatch.delenv("ABLATE_CPU_BF16", raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_has_native_bf16(str(info)) is native
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is False


@pytest.mark.parametrize("forced, train, sample", [("0", "32-true", "fp32"), ("1", "bf16-mixed", "bf16")])
def test_a_cpu_without_native_bf16_trains_and_samples_in_fp32(compose, monkeypatch, forced, train, sample):
    """The default (precision auto) on a CPU: bf16 only where the processor multiplies bf16 natively."""
    from ablate.pipeline.specs import precision_reason

    monkeypatch.setenv("ABLATE_CPU_BF16", forced)
    exp = build_experiment(compose(["trainer.accelerator=cpu"]))
    assert exp.trainer.precision == "auto"
    assert exp.trainer.resolved_precision == train and exp.axes()["precision"] == train
    assert exp.eval.resolved_precision(on_gpu=False) == sample
    assert ("no native bf16" in precision_reason(exp.trainer)) is (forced == "0")
    # the precision is part of the training identity: fp32 and bf16 runs never share a checkpoint
    key = exp.train_key
    monkeypatch.setenv("ABLATE_CPU_BF16", "1" if forced == "0" else "0")
    assert build_experiment(compose(["trainer.accelerator=cpu"])).train_key != key
