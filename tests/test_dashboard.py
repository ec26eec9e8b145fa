"""W&B dashboards as code: the workspace of every study, its keys against a real offline run, the CLI offline."""

import functools
import inspect
import json
import re
import socket

import pytest

from ablate.pipeline import metric_names as mn
from ablate.studies import available_studies
from ablate.studies import dashboard as db

# tests/test_run.py's fast settings, with W&B offline and the loss logged every step.
FAST = ["model.depth=2", "model.hidden_size=64", "model.num_heads=2", "trainer.batch_size=32",
        "trainer.steps=2", "eval.num_samples=20", "eval.batch_size=20", "sampler.steps=2", "trainer.log_every=1",
        "eval.seeds=[0]"]
# The dashboard only needs the evaluation budget the runs used (it names the FID key).
BUDGET = ["eval.num_samples=20"]
SECTIONS = ("table", "FID vs GFLOPs", "FID vs NFE", "training", "axes", "samples")


@functools.lru_cache(maxsize=None)
def _spec(study: str, budget: bool = True) -> dict:
    return db.spec_for_study(study, scale="cpu", extra=BUDGET if budget else (), entity="E", project="P")


def _panels(spec: dict, section: str) -> list[dict]:
    (s,) = [s for s in spec["sections"] if s["name"] == f"{spec['study']}: {section}"]
    return s["panels"]


# --- metric names: one source for the logging code and the dashboards --------------------------------------------


def test_metric_key_closed_forms_and_errors():
    assert mn.metric_key("fid", 1000, "sde_em-w_kl-nfe250-cfg1.0") == "eval/fid1k/sde_em-w_kl-nfe250-cfg1.0"
    assert mn.metric_key("fid", 50000) == "eval/fid50k"
    assert mn.metric_key("fid", 640, "ddpm-nfe250-cfg1.0") == "eval/fid640/ddpm-nfe250-cfg1.0"
    assert mn.metric_key("fid", 1500) == "eval/fid1500"  # not a whole thousand: written out
    for bad in [("fid", 0), ("fid", 2.5), ("fid/x", 10), ("", 10), ("fid", 10, "a/b"), ("fid", 10, "")]:
        with pytest.raises(ValueError, match="got"):
            mn.metric_key(*bad)


def test_logging_code_takes_its_names_from_metric_names():
    from ablate.pipeline import evaluation, lit

    assert evaluation.metric_key is mn.metric_key
    # No metric name is spelt out in the logging code: a rename in metric_names renames what is logged.
    for module in (evaluation, lit):
        src = inspect.getsource(module)
        literals = re.findall(r"[\"'](?:eval|train|trainer)/[A-Za-z_*]+[\"']", src)
        assert literals == [], f"{module.__name__} spells out metric names {literals}; use ablate.metric_names"


# --- the specification, from plain axis dicts ---------------------------------------------------------------------


def _axes(**kw):
    base = {"time": "continuous", "prediction": "velocity", "interpolant": "linear", "sampler": "ode",
            "solver": "heun", "sampler_steps": 25, "sde_coef": None, "guidance": 1.0, "train_steps": 1000,
            "sampler_tag": "ode_heun-nfe50-cfg1.0", "row": None}
    return {**base, **kw}


def test_varied_axes_ignores_labels_and_constants():
    rows = [_axes(interpolant=i, sampler_tag=f"t{i}", row=str(n)) for n, i in enumerate(("linear", "gvp", "vp"))]
    assert db.varied_axes(rows) == ["interpolant"]
    # Only labels differ: they are all there is to tell the rows apart.
    assert db.varied_axes([_axes(row="a"), _axes(row="b")]) == ["row"]
    with pytest.raises(ValueError, match="no rows"):
        db.varied_axes([])


def test_independent_axes_drop_axes_implied_by_earlier_ones():
    # solver follows the sampler in these rows (ode->heun, sde->em); diffusion is free within sde.
    rows = [_axes(sampler="ode", solver="heun"), _axes(sampler="sde", solver="em", sde_coef="w_kl"),
            _axes(sampler="sde", solver="em", sde_coef="sigma")]
    assert db.independent_axes(rows, ["sampler", "solver", "sde_coef"]) == ["sampler", "sde_coef"]
    assert db.independent_axes(rows, ["solver", "sampler"]) == ["solver"]


def test_nfe_sweep_groups_by_sampler_and_coefficient_not_by_nfe():
    rows = [_axes(sampler=s, solver=v, diffusion=d, sampler_steps=n, row=f"{s}{d}{n}")
            for s, v, d in (("ode", "heun", None), ("sde", "em", "w_kl"), ("sde", "em", "sigma")) for n in (8, 16)]
    spec = db.build_spec({"name": "toy", "metric": "fid", "plot": "nfe"}, rows, [1000] * len(rows))
    assert spec["runset"]["groupby"] == ["config:sampler", "config:diffusion"]  # one curve per sampler/coefficient
    assert [s["name"] for s in spec["sections"]][:2] == ["toy: table", "toy: FID vs NFE"]  # headline figure first
    (line,) = _panels(spec, "FID vs NFE")
    assert line["x"] == f"history:{mn.NFE}" and line["y"] == ["history:eval/fid1k"]


def test_every_row_its_own_group_uses_the_row_id():
    rows = [_axes(time=t, prediction=p, interpolant=i, row=r)
            for r, t, p, i in (("0", "discrete", "noise", "vp"), ("1", "continuous", "score", "vp"),
                               ("4a", "continuous", "velocity", "linear"), ("4b", "continuous", "velocity", "gvp"))]
    spec = db.build_spec({"name": "toy", "metric": "fid"}, rows, [20] * 4)
    # three nested levels would separate every row anyway: one level, the table's row id, does the same
    assert spec["runset"]["groupby"] == ["config:row"]
    assert spec["runset"]["pinned_columns"][0] == "config:row"
    assert spec["runset"]["pinned_columns"][-1] == "summary:eval/fid20"


# --- the workspace of every study ---------------------------------------------------------------------------------


@pytest.mark.parametrize("study", available_studies())
def test_study_workspace_has_the_expected_sections_and_panels(study):
    spec = _spec(study)
    fid = mn.metric_key("fid", 20)  # BUDGET evaluates 20 samples
    assert spec["study"] == spec["runset"]["group"] == study
    assert sorted(s["name"] for s in spec["sections"]) == sorted(f"{study}: {t}" for t in SECTIONS)
    assert spec["varied_axes"], f"{study}: no axis varies across its rows"
    (bar,) = _panels(spec, "table")
    assert bar["type"] == "bar" and bar["metrics"] == [f"summary:{fid}"]
    scatter = _panels(spec, "FID vs GFLOPs")
    xs = {p["x"] for p in scatter if p["x"].startswith("summary:")}
    assert xs == {f"summary:{k}" for k in (mn.MODEL_GFLOPS, mn.SAMPLE_GFLOPS, mn.TRAIN_GFLOPS)}
    assert all(p["type"] == "scatter" and p["y"] == f"summary:{fid}" for p in scatter)
    if study == "cfg_sweep":
        assert any(p["x"] == "config:guidance" for p in scatter)
    ((nfe,), training) = _panels(spec, "FID vs NFE"), _panels(spec, "training")
    assert nfe["x"] == f"history:{mn.NFE}" and nfe["y"] == [f"history:{fid}"]
    assert {(p["x"], p["y"][0]) for p in training} == {(f"history:{mn.GLOBAL_STEP}", f"history:{fid}"),
                                                       (f"history:{mn.GLOBAL_STEP}", f"history:{mn.TRAIN_LOSS}")}
    (par,) = _panels(spec, "axes")
    every = ("time", "prediction", "interpolant", "weighting", "time_density", "sampler", "sde_coef", "guidance",
             "model", "data", "train_steps", "seed")
    assert {f"config:{a}" for a in every} <= set(par["columns"])
    assert par["columns"][-1] == f"summary:{fid}" and len(par["columns"]) == len(set(par["columns"]))
    assert {f"config:{a}" for a in spec["varied_axes"]} <= set(par["columns"])
    (media,) = _panels(spec, "samples")
    assert media["keys"] == [f"history:{mn.SAMPLES}"]
    # the run set colours by the varied axes, never by the ones on an x axis
    assert all(g[len("config:"):] not in db.X_AXES for g in spec["runset"]["groupby"])


def test_study_specific_axes():
    # dit_scaling changes the model size by overrides at CPU scale: the axes flatten them (model_depth, ...)
    assert {"model_depth", "model_hidden_size", "model_patch_size"} <= set(_spec("dit_scaling")["varied_axes"])
    assert _spec("cfg_sweep")["varied_axes"] == ["guidance"]
    nfe = _spec("nfe_sweep")
    assert "sampler_steps" in nfe["varied_axes"] and "config:sampler_steps" not in nfe["runset"]["groupby"]
    assert {"config:sampler", "config:sde_coef"} <= set(nfe["runset"]["groupby"])


def test_metric_keys_follow_the_evaluation_budget():
    # the study's own CPU budget (eval.num_samples=500) gives eval/fid500; BUDGET gives eval/fid20
    spec = _spec("cfg_sweep", budget=False)
    refs = db.referenced_keys(spec)
    assert "summary:eval/fid500" in refs and not any("fid20" in r for r in refs)


# --- wandb-workspaces objects (built locally, never saved) --------------------------------------------------------


def test_to_workspace_builds_the_wandb_workspace_offline():
    pytest.importorskip("wandb_workspaces")
    import wandb_workspaces.reports.v2 as wr

    spec = _spec("nfe_sweep")
    w = db.to_workspace(spec)
    assert [s.name for s in w.sections] == [s["name"] for s in spec["sections"]]
    kinds = {type(p) for s in w.sections for p in s.panels}
    assert kinds == {wr.BarPlot, wr.ScatterPlot, wr.LinePlot, wr.ParallelCoordinatesPlot, wr.MediaBrowser}
    model = json.dumps(w._to_model().model_dump(by_alias=True, exclude_none=True), default=str)
    # the run set keeps the study's W&B group and groups by its varied axes
    assert '"key": {"section": "run", "name": "group"}, "op": "=", "value": "nfe_sweep"' in model
    assert '{"section": "config", "name": "sampler.value"}' in model
    assert f'"xAxis": "{mn.NFE}"' in model and '"summary:eval/fid20"' in model
    bad = {**spec, "entity": None}
    with pytest.raises(ValueError, match="entity"):
        db.to_workspace(bad)


# --- the CLI ------------------------------------------------------------------------------------------------------


def test_dry_run_prints_the_spec_without_network(capsys, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("--dry-run opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert db.main(["study=cfg_sweep", "entity=E", "project=P", "--override", BUDGET[0], "--dry-run"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec == json.loads(json.dumps(_spec("cfg_sweep")))
    # without --dry-run, a missing entity fails before any upload
    with pytest.raises(ValueError, match="entity"):
        db.main(["--study", "cfg_sweep", "--project", "P", f"override={BUDGET[0]}"])


def test_unknown_study_names_the_valid_ones():
    from ablate.studies import StudyError

    with pytest.raises(StudyError, match="sit_walk"):
        db.spec_for_study("no_such_study")


# --- against a real offline run -----------------------------------------------------------------------------------


def _offline_run(tmp, study: str, row: str | None = None):
    """One tiny CPU run of a study row (the first it runs at CPU scale by default), logged to W&B offline;
    returns (the keys it logged, its W&B run directory, its config)."""
    import wandb

    from ablate.pipeline.runner import run
    from ablate.studies import compose_row, load_study

    st = load_study(study)
    row = row or next(r.id for r in st.rows if not r.skip_reason("cpu"))
    cfg = compose_row(st, row, "cpu", extra=[*FAST, "logger=wandb", "logger.mode=offline", f"out_dir={tmp}"])
    try:
        run(cfg, job_dir=tmp / "job")
    finally:
        wandb.finish()
    (run_dir,) = (tmp / "job" / "wandb").glob("offline-run-*")
    return db.logged_keys(run_dir), run_dir, cfg


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """A sit_walk row (velocity, linear path, Heun ODE) run for real, W&B offline."""
    return _offline_run(tmp_path_factory.mktemp("sit_walk"), "sit_walk", "4a")


@pytest.fixture(scope="module")
def offline_runs(tmp_path_factory, offline_run):
    """Runs whose logged keys stand for each study's: sit_walk's, and a dit_scaling row's, since only that study's
    rows set the model's patch size (its dashboard reads config:model_patch_size)."""
    return {"sit_walk": offline_run, "dit_scaling": _offline_run(tmp_path_factory.mktemp("dit"), "dit_scaling")}


def _missing(refs: set[str], keys: dict[str, set[str]]) -> list[str]:
    return sorted(r for r in refs if r.partition(":")[2] not in keys[r.partition(":")[0]])


def test_logged_keys_reads_the_offline_run(offline_run):
    from ablate.pipeline.build import build_experiment

    keys, _, cfg = offline_run
    fid = mn.metric_key("fid", 20)
    assert {fid, mn.metric_key("fid", 20, build_experiment(cfg).sampler.tag), mn.NFE, mn.SAMPLES,
            *mn.GFLOPS.values(), mn.TRAIN_LOSS, mn.GLOBAL_STEP} <= keys["history"]
    assert {fid, mn.MODEL_GFLOPS, mn.SAMPLES} <= keys["summary"]
    assert {"study", "row", "interpolant", "sampler_tag", "model_depth", "train_key"} <= keys["config"]


def test_history_reads_the_logged_loss_curve(offline_run):
    """The loss curve of an offline run, read back from its file: one value per training step (log_every=1)."""
    import math

    from ablate.studies.wandb_offline import history

    _, run_dir, cfg = offline_run
    h = [r for r in history(run_dir, [mn.TRAIN_LOSS, mn.GLOBAL_STEP]) if mn.TRAIN_LOSS in r]
    assert len(h) == cfg.trainer.steps
    assert all(math.isfinite(r[mn.TRAIN_LOSS]) and r[mn.TRAIN_LOSS] > 0 for r in h)
    steps = [r[mn.GLOBAL_STEP] for r in h]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)


@pytest.mark.parametrize("study", available_studies())
def test_every_key_a_study_dashboard_references_is_logged_by_a_cpu_run(study, offline_runs):
    keys, _, _ = offline_runs.get(study, offline_runs["sit_walk"])
    missing = _missing(db.referenced_keys(_spec(study)), keys)
    assert missing == [], f"{study}: the dashboard references keys no run logs: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("study", available_studies())
def test_every_key_is_logged_by_a_run_of_that_very_study(study, tmp_path):
    keys, _, _ = _offline_run(tmp_path, study)
    missing = _missing(db.referenced_keys(_spec(study)), keys)
    assert missing == [], f"{study}: the dashboard references keys its own run does not log: {missing}"


def test_a_renamed_metric_would_be_caught(offline_run, monkeypatch):
    keys, _, _ = offline_run
    monkeypatch.setattr(mn, "NFE", "eval/num_function_evals")  # renamed in the dashboard only
    refs = db.referenced_keys(db.build_spec({"name": "toy", "metric": "fid"}, [_axes(), _axes(interpolant="vp")],
                                            [20, 20]))
    assert _missing(refs, keys) == ["history:eval/num_function_evals"]


def test_corrupt_run_file_is_refused(offline_run, tmp_path):
    _, run_dir, _ = offline_run
    (src,) = run_dir.glob("run-*.wandb")
    data = bytearray(src.read_bytes())
    data[40] ^= 0xFF  # inside the first record
    (tmp_path / src.name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt record"):
        db.logged_keys(tmp_path)
    (tmp_path / src.name).write_bytes(src.read_bytes()[:7])  # the header only: a run still being written
    with pytest.raises(TimeoutError, match="no exit record"):
        db.logged_keys(tmp_path, timeout_s=0.5)
    (tmp_path / src.name).write_bytes(b"not a run file")
    with pytest.raises(ValueError, match="not a W&B run file"):
        db.logged_keys(tmp_path)


def test_logged_keys_reads_records_spanning_blocks(tmp_path):
    # 100 kB of config and 40 kB per history row: W&B splits them over its 32 KiB blocks (first/middle/last)
    import wandb

    run = wandb.init(mode="offline", dir=str(tmp_path), project="p",
                     config={"big": "x" * 100_000, "nested": {"a": {"b": 1}}})
    for i in range(3):
        run.log({f"k/{i}": i, "blob": "y" * 40_000})
    run.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert next(run_dir.glob("run-*.wandb")).stat().st_size > 4 * 32768
    keys = db.logged_keys(run_dir)
    assert {"k/0", "k/1", "k/2", "blob"} <= keys["history"]
    assert {"big", "nested", "nested.a.b"} <= keys["config"]


def test_paper_scale_reads_fid50k_and_groups_by_the_dit_preset():
    spec = db.spec_for_study("dit_scaling", scale="paper")
    assert spec["name"] == "ablate: dit_scaling (paper)"
    assert spec["runset"]["groupby"] == ["config:model"]  # dit-s8 ... dit-xl2: the sizes, one level
    assert "summary:eval/fid50k" in db.referenced_keys(spec)  # DiT's FID-50K
    assert not any(a.startswith("model_") for a in spec["varied_axes"])  # the sizes come from the presets
