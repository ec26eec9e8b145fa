"""Study files: every file loads, every row composes and validates at both scales with the NFE and guidance of
its budget, every published number of the reference CSVs appears in a study, and the runner runs a row."""

import csv
from pathlib import Path

import pytest
from ablate.build import build_sampler_from_cfg, validate

from ablate.studies import (
    EXPERIMENTS_DIR,
    StudyError,
    available_studies,
    compose_row,
    load_study,
    row_nfe,
    row_overrides,
    run_study,
    steps_for_nfe,
)

REF = EXPERIMENTS_DIR / "reference"
STUDIES = ["sit_walk", "sit_table5", "sit_table6", "sit_sizes", "dit_scaling", "nfe_sweep", "cfg_sweep"]
# Paper scale needs the user's latents and reference images; validation only checks that they are given.
PAPER_DATA = ["data.root=/data/latents.npz", "data.reference_root=/data/imagenet"]


def _csv(name):
    return list(csv.DictReader(open(REF / name)))


def test_every_study_is_present_and_loads():
    assert set(STUDIES) <= set(available_studies())
    for name in STUDIES:
        s = load_study(name)
        assert s.name == name and s.rows and s.metric == "fid"
        assert len({r.id for r in s.rows}) == len(s.rows)


def test_reference_csvs_are_the_shared_facts():
    shared = Path(__file__).resolve().parents[2] / "shared" / "reference"
    if not shared.exists():
        pytest.skip("../shared/reference not present in this checkout")
    for p in shared.glob("*.csv"):
        assert (REF / p.name).read_text() == p.read_text(), p.name


@pytest.mark.parametrize("name", STUDIES)
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_every_row_composes_validates_and_spends_its_budget(name, scale):
    study = load_study(name)
    for row in study.rows:
        if row.skip_reason(scale):
            continue
        cfg = compose_row(study, row, scale, seed=3, extra=PAPER_DATA if scale == "paper" else ())
        validate(cfg)
        assert (cfg.study, str(cfg.row), cfg.seed) == (name, row.id, 3)
        kind, _, solver = row.budget["sampler"].partition("_")
        assert cfg.sampler.name == kind and cfg.sampler.get("solver", kind) == (solver or kind)
        sampler = build_sampler_from_cfg(cfg)
        assert sampler.expected_nfe == row_nfe(study, row, scale), (row.id, sampler.tag)
        assert cfg.guidance.scale == row.budget["cfg"]
        if scale == "paper":
            assert row_nfe(study, row, scale) == row.budget["nfe"]
            assert cfg.trainer.batch_size == 256 and cfg.eval.num_samples == row.budget["num_samples"] == 50000
            k = row.paper.get("train_steps_k") or (7000 if "7000K" in row.id else 400)
            assert cfg.trainer.steps == 1000 * k
        else:
            assert cfg.data.name == "digits" and cfg.trainer.accelerator == "cpu"
            base = [int(o.split("=")[1]) for o in study.scales["cpu"]["overrides"] if o.startswith("trainer.steps=")]
            long = 7000 if "7000K" in row.id else 400  # the 7M-step rows keep the paper's ratio 17.5
            assert cfg.trainer.steps * 400 == base[0] * long


@pytest.mark.parametrize("name", [s for s in STUDIES if load_study(s).scales["cpu"].get("nfe")])
def test_cpu_scale_uses_one_nfe_for_every_row(name):
    study = load_study(name)
    assert {row_nfe(study, r, "cpu") for r in study.rows} == {study.scales["cpu"]["nfe"]}


def test_every_sit_walk_row_appears_with_its_axes_and_number():
    study = load_study("sit_walk")
    for r in _csv("sit_walk.csv"):
        row = study.row(r["row"])
        assert row.paper["fid50k"] == float(r["fid50k"]) and row.paper["source"] == r["source"]
        cfg = compose_row(study, row, "paper", extra=PAPER_DATA)
        assert cfg.time.name == r["time"] and cfg.prediction.name == r["prediction"]
        assert r["interpolant"].startswith(cfg.interpolant._target_.rsplit(".", 1)[-1].lower())
        assert row.budget["sampler"] == r["sampler"] and row.budget["steps_or_nfe"] == r["steps_or_nfe"]
        assert cfg.weighting.name == ("velocity" if "lambda" in r["objective"] else "none")
        if r["diffusion"]:
            assert cfg.diffusion.name == r["diffusion"].lower()
    assert len(study.rows) == len(_csv("sit_walk.csv"))


def test_every_dit_table4_row_appears_with_model_gflops_and_number():
    study = load_study("dit_scaling")
    assert len(study.rows) == len(_csv("dit_table4.csv")) == 14
    for r in _csv("dit_table4.csv"):
        (row,) = [x for x in study.rows if x.setting.startswith(r["model"] + ",")
                  and x.paper["resolution"] == int(r["resolution"])
                  and x.paper["train_steps_k"] == int(r["train_steps_k"])]
        assert row.paper["fid50k"] == float(r["fid50k"]) and row.paper["gflops"] == float(r["gflops"])
        cfg = compose_row(study, row, "paper", extra=PAPER_DATA)
        assert cfg.model.name == r["model"] and 8 * cfg.data.image_size == int(r["resolution"])


def test_sit_table6_table5_and_sizes_carry_every_published_number():
    t6 = load_study("sit_table6")
    for r in _csv("sit_table6.csv"):
        for col in ("w_KL", "w_sigma", "w_sin2", "w_KL_eta"):
            assert t6.row(f"{r['interpolant']}-{r['prediction']}-{col}").paper["fid50k"] == float(r[col])
    t5 = load_study("sit_table5")
    walk = {r["row"]: float(r["fid50k"]) for r in _csv("sit_walk.csv")}
    assert [t5.row(f"{i}-ode").paper["fid50k"] for i in ("vp", "linear", "gvp")] == [walk["3"], walk["4a"], walk["4b"]]
    assert [t5.row(f"{i}-sde").paper["fid50k"] for i in ("vp", "linear", "gvp")] == [walk["5a"], walk["5b"], walk["5c"]]
    sizes = load_study("sit_sizes")
    for r in _csv("sit_table8.csv"):
        row = sizes.row(f"{r['model'][4:].split('/')[0]}-{r['train_steps_k']}K-{r['sampler']}")
        assert row.paper["fid50k"] == float(r["fid"]) and row.paper["is"] == float(r["is"])
    for r in _csv("sit_dit_table1.csv"):
        rid = f"{r['size']}-{r['train_steps_k']}K-sde" + ("" if r["cfg"] == "1.0" else f"-cfg{r['cfg']}")
        assert sizes.row(rid).paper["dit_fid50k"] == float(r["dit_fid"])
        assert float(r["sit_fid"]) in (sizes.row(rid).paper["fid50k"], sizes.row(rid).paper.get("table1_sit_fid50k"))


def test_steps_for_nfe_matches_each_samplers_cost():
    assert steps_for_nfe("ode_heun", 250) == 125  # SiT's "Heun, 250 NFE"
    assert steps_for_nfe("sde_em", 250) == 250 and steps_for_nfe("ddpm", 250) == 250
    with pytest.raises(StudyError, match="multiple of 2"):
        steps_for_nfe("ode_heun", 25)
    with pytest.raises(StudyError, match="valid"):
        steps_for_nfe("ode_rk45", 10)


def test_overrides_later_values_win_and_bad_names_fail():
    study = load_study("sit_walk")
    ov = row_overrides(study, "4a", "cpu", seed=1, extra=["trainer.steps=7", "sampler.steps=3"])
    keys = [o.split("=")[0].lstrip("+") for o in ov]
    assert len(keys) == len(set(keys))
    assert "trainer.steps=7" in ov and "sampler.steps=3" in ov and "trainer.steps=1000" not in ov
    assert ov[0] == "trainer=cpu" and ov[-3:] == ["study=sit_walk", "row='4a'", "seed=1"]  # extras replace in place
    with pytest.raises(StudyError, match="valid studies"):
        load_study("no_such_study")
    with pytest.raises(StudyError, match="no row"):
        study.row("9z")
    with pytest.raises(StudyError, match="valid"):
        row_overrides(study, "4a", "gpu")


def test_show_prints_shell_commands_that_parse_back(capsys):
    import shlex

    from ablate.studies import main

    assert main(["show", "dit_scaling", "--rows", "S/8", "--seeds", "2", "trainer.steps=5"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    argv = shlex.split(line)
    assert argv[:3] == ["python", "-m", "ablate.run"]
    assert argv[3:] == row_overrides(load_study("dit_scaling"), "S/8", "cpu", 2, ["trainer.steps=5"])


def test_dry_run_lists_every_job_and_skips_unrunnable_rows(tmp_path):
    jobs = run_study("dit_scaling", "cpu", seeds=(0, 1), dry_run=True, echo=lambda s: None,
                     results=str(tmp_path / "r.jsonl"))
    assert len(jobs) == 28
    skipped = [j for j in jobs if j["status"].startswith("skipped")]
    assert {j["row"] for j in skipped} == {"XL/2-512px"}
    assert all(j["status"] == "dry-run" for j in jobs if j not in skipped)
    assert not (tmp_path / "r.jsonl").exists()


FAST = ["+model.depth=2", "+model.hidden_size=64", "+model.num_heads=2", "logger=none", "trainer.batch_size=32",
        "trainer.steps=2", "eval.num_samples=20", "eval.batch_size=20", "sampler.steps=2"]


def test_a_row_runs_in_process_tags_its_rows_and_resumes(tmp_path):
    from ablate.results import read_results

    res = tmp_path / "results.jsonl"
    kw = dict(rows=["4a"], extra=FAST + [f"out_dir={tmp_path}"], results=str(res), echo=lambda s: None)
    (job,) = run_study("sit_walk", "cpu", **kw)
    assert job["status"] == "ok"
    df = read_results(res)
    assert len(df) == 1
    r = df.iloc[0]
    assert (r["study"], r["row"], r["seed"], r["status"]) == ("sit_walk", "4a", 0, "ok")
    assert (r["interpolant"], r["prediction"], r["sampler"], r["solver"]) == ("linear", "velocity", "ode", "heun")
    (again,) = run_study("sit_walk", "cpu", **kw)  # already recorded: skipped, nothing appended
    assert again["status"] == "done before" and len(read_results(res)) == 1


def test_a_stop_signal_stops_the_study_without_a_failed_row(tmp_path, monkeypatch):
    """SIGTERM/SIGUSR2 during a row (TrainingInterrupted, last.ckpt saved) ends the study, unlike a failing row."""
    from ablate.checkpointing import TrainingInterrupted

    import ablate.run

    calls = []

    def interrupted(cfg, job_dir=None):
        calls.append(cfg.row)
        raise TrainingInterrupted("training stopped on a signal at step 3 of 600")

    monkeypatch.setattr(ablate.run, "run", interrupted)
    res = tmp_path / "results.jsonl"
    with pytest.raises(TrainingInterrupted):
        run_study("sit_walk", "cpu", rows=["4a", "4b"], extra=FAST + [f"out_dir={tmp_path}"], results=str(res),
                  echo=lambda s: None)
    assert calls == ["4a"] and not res.exists()  # the next row did not start; no failure recorded
