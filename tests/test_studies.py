"""Studies: every study and its rows load, every row is an ordinary Hydra experiment config that composes and builds
at both scales with its budget, every published number of the reference CSVs appears in a row, claims are
well-formed, and a study runs as one multirun into its own store and compares itself with the committed rows."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ablate.pipeline.build import ConfigError, build_experiment
from ablate.studies import EXPERIMENTS_DIR, StudyError, available_studies, compose_row, load_study, row_overrides
from ablate.studies.catalog import PAPER_DATA, command, study_overrides
from ablate.studies.claims import _check

REF = EXPERIMENTS_DIR / "reference"
STUDIES = ["sit_walk", "sit_table5", "sit_table6", "sit_sizes", "dit_scaling", "nfe_sweep", "cfg_sweep"]
DATA = ["data.root=/data/latents.pt", "eval.reference=/data/VIRTUAL_imagenet256_labeled.npz"]  # the user's data
ROOT = Path(__file__).resolve().parents[1]


def _csv(name):
    return list(csv.DictReader(open(REF / name)))


def test_every_study_is_present_and_loads_with_its_claims():
    assert set(STUDIES) <= set(available_studies())
    for name in STUDIES:
        s = load_study(name)
        assert s.name == name and s.rows and s.metric == "fid"
        assert len({r.id for r in s.rows}) == len(s.rows)
        for c in s.claims:
            _check(s, c)  # rows exist and have paper numbers; the kind is known
    assert {len(load_study(n).claims) > 0 for n in ("sit_walk", "sit_table5", "sit_table6")} == {True}


@pytest.mark.parametrize("name", STUDIES)
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_every_row_composes_builds_and_spends_its_budget(name, scale):
    study = load_study(name)
    for row in study.rows:
        if row.skip_reason(scale):
            with pytest.raises(ConfigError, match=f"not run at {scale} scale"):
                build_experiment(compose_row(study, row, scale, extra=DATA if scale == "paper" else ()))
            continue
        cfg = compose_row(study, row, scale, seed=3, extra=DATA if scale == "paper" else ())
        exp = build_experiment(cfg)
        assert (exp.study, exp.row, exp.seed, exp.scale) == (name, row.id, 3, scale)
        family, _, solver = row.paper["sampler"].partition("_")
        assert exp.sampler.describe()["sampler"] == family and exp.sampler.describe()["solver"] == (solver or family)
        assert exp.guidance.scale == row.paper["cfg"]
        if scale == "paper":
            assert exp.sampler.expected_nfe == row.paper["nfe"], (row.id, exp.sampler.tag)
            assert exp.trainer.batch_size == 256 and exp.eval.num_samples == row.paper["num_samples"] == 50000
            k = row.paper.get("train_steps_k") or (7000 if "7000K" in row.id else 400)
            assert exp.trainer.steps == 1000 * k
        else:
            assert exp.data.name == "digits" and exp.trainer.accelerator == "cpu" and exp.eval.num_samples == 500
            assert exp.sampler.expected_nfe == row.at["cpu"].get("sampler", {}).get("nfe", 50)
            long = 7000 if "7000K" in row.id else 400  # the 7M-step rows keep the paper's ratio 17.5
            assert exp.trainer.steps * 400 == 600 * long


def test_a_row_is_an_ordinary_experiment_config_on_the_command_line(tmp_path):
    """`python -m ablate.run +experiment=sit_walk/4a seed=1` composes the row (checked without training by an
    invalid value that fails at build time, after composition)."""
    r = subprocess.run([sys.executable, "-m", "ablate.run", "+experiment=sit_walk/4a", "seed=1", "trainer.lr=-1",
                        f"out_dir={tmp_path}"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 2 and "trainer.lr must be > 0" in r.stderr, r.stderr[-2000:]


def test_every_sit_walk_row_appears_with_its_axes_and_number():
    study = load_study("sit_walk")
    for r in _csv("sit_walk.csv"):
        row = study.row(r["row"])
        assert row.paper["fid50k"] == float(r["fid50k"]) and row.paper["source"] == r["source"]
        exp = build_experiment(compose_row(study, row, "paper", extra=DATA))
        assert exp.time.kind == r["time"] and exp.prediction == r["prediction"]
        assert r["interpolant"].startswith(exp.interpolant.name)
        assert row.paper["sampler"] == r["sampler"]
        assert exp.weighting == ("velocity" if "lambda" in r["objective"] else "none")
        if r["diffusion"]:
            assert exp.sampler.describe()["sde_coef"] == r["diffusion"].lower()
    assert len(study.rows) == len(_csv("sit_walk.csv"))


def test_every_dit_table4_row_appears_with_model_gflops_and_number():
    study = load_study("dit_scaling")
    assert len(study.rows) == len(_csv("dit_table4.csv")) == 14
    for r in _csv("dit_table4.csv"):
        (row,) = [x for x in study.rows if x.setting.startswith(r["model"] + ",")
                  and x.paper["resolution"] == int(r["resolution"])
                  and x.paper["train_steps_k"] == int(r["train_steps_k"])]
        assert row.paper["fid50k"] == float(r["fid50k"]) and row.paper["gflops"] == float(r["gflops"])
        exp = build_experiment(compose_row(study, row, "paper", extra=DATA))
        assert exp.model.name == r["model"] and 8 * exp.data.image_size == int(r["resolution"])


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
    guided = build_experiment(compose_row(sizes, "XL-7000K-sde-cfg1.5", "cpu"))
    assert guided.guidance.legacy_channels == 3  # DiT/SiT's three-channel rule, as behind the published 2.06


def test_overrides_and_bad_names():
    study = load_study("sit_walk")
    assert row_overrides(study, "4a", "cpu", seed=1, extra=["trainer.steps=7"]) == [
        "+experiment=sit_walk/4a", "scale=cpu", "seed=1", "trainer.steps=7"]
    with pytest.raises(StudyError, match="valid studies"):
        load_study("no_such_study")
    with pytest.raises(StudyError, match="no row"):
        study.row("9z")
    with pytest.raises(StudyError, match="valid"):
        row_overrides(study, "4a", "gpu")
    ov, skipped = study_overrides(load_study("dit_scaling"), "cpu", seeds=(0, 1))
    assert [r.id for r in skipped] == ["XL/2-512px"] and "dit_scaling/XL-2-512px" not in ov[0]
    assert ov[0].startswith("+experiment=dit_scaling/S-8,") and ov[1:] == ["scale=cpu", "seed=0,1"]


def test_show_prints_runnable_commands_with_named_placeholders_at_paper_scale(capsys):
    import shlex

    from ablate.studies.__main__ import main

    assert main(["show", "dit_scaling", "--rows", "S/8", "--seeds", "2", "trainer.steps=5"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert shlex.split(line) == ["python", "-m", "ablate.run", "+experiment=dit_scaling/S-8", "scale=cpu", "seed=2",
                                 "trainer.steps=5"]
    assert main(["show", "sit_walk", "--rows", "4a", "--scale", "paper"]) == 0
    head, line = capsys.readouterr().out.splitlines()
    assert "replace the placeholders" in head and all(p in line for p in PAPER_DATA)
    # run as printed: the placeholder is named, no work is done
    cfg = compose_row(load_study("sit_walk"), "4a", "paper", extra=list(PAPER_DATA))
    with pytest.raises(ConfigError, match="data.root=LATENTS_FILE.*placeholder"):
        build_experiment(cfg)
    with pytest.raises(ConfigError, match="data.root=<value>, eval.reference=<value>"):
        build_experiment(compose_row(load_study("sit_walk"), "4a", "paper"))


FAST = ["model.depth=2", "model.hidden_size=64", "model.num_heads=2", "logger=none", "trainer.batch_size=32",
        "trainer.steps=2", "eval.num_samples=20", "eval.batch_size=20", "sampler.steps=2", "eval.seeds=[0]"]


def test_a_study_runs_as_one_multirun_into_its_own_store_and_compares_with_the_committed_rows(tmp_path):
    """`make study` on a small budget: the rows run into a store of their own; a second run reproduces the first
    (used as the committed store) and the comparison reports every row equal; commit copies rows explicitly."""
    from ablate.results import read_results
    from ablate.studies.runner import commit, compare, run_study

    args = ["hydra/launcher=basic", *FAST]
    assert run_study("sit_walk", rows=["4a", "5b"], extra=args, out_dir=tmp_path / "a", echo=lambda s: None) == 0
    a = read_results(tmp_path / "a" / "results.jsonl")
    assert sorted(a["row"]) == ["4a", "5b"] and a["train_key"].nunique() == 1  # 5b reuses 4a's training
    committed = tmp_path / "committed.jsonl"
    assert commit("sit_walk", tmp_path / "a" / "results.jsonl", committed, echo=lambda s: None) == 2
    assert run_study("sit_walk", rows=["4a", "5b"], extra=args, out_dir=tmp_path / "b", echo=lambda s: None) == 0
    lines = []
    j = compare("sit_walk", tmp_path / "b" / "results.jsonl", committed, echo=lines.append)
    assert len(j) == 2 and (j["difference"] == 0).all() and all("(equal)" in x for x in lines)
    assert commit("sit_walk", tmp_path / "b" / "results.jsonl", committed, echo=lambda s: None) == 2
    assert len(read_results(committed, latest=False)) == 2  # the same points replaced, not duplicated


@pytest.mark.slow
def test_make_study_reruns_a_committed_row_and_reports_it_equal(tmp_path):
    """The acceptance check on the real budget: sit_walk row 4a, seed 0, rerun on a fresh store (one thread, as the
    committed rows were computed) equals the committed row to the last digit."""
    env = {**os.environ, "ABLATE_JOBS": "1"}
    r = subprocess.run([sys.executable, "-m", "ablate.studies", "run", "sit_walk", "--rows", "4a", "--seeds", "0",
                        "--store", str(tmp_path), "logger=none"], capture_output=True, text=True, timeout=1800,
                       cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = [x for x in r.stdout.splitlines() if x.startswith("[study sit_walk] row 4a")]
    assert out and all("(equal)" in x for x in out), r.stdout[-3000:]


def test_command_quotes_only_what_needs_it():
    assert command(["+experiment=sit_walk/4a", "seed=1"]) == "python -m ablate.run +experiment=sit_walk/4a seed=1"
    assert command(["guidance.scale=1.5"], multirun=True) == "python -m ablate.run -m guidance.scale=1.5"
    assert command(["eval.seeds=[0,1]"]) == "python -m ablate.run 'eval.seeds=[0,1]'"


def test_committed_rows_carry_no_absolute_path():
    for line in (ROOT / "results" / "cpu" / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        for k, v in r.items():
            assert not (isinstance(v, str) and v.startswith("/")), (k, v)


def test_committing_a_study_keeps_another_study_s_row_of_the_same_point(tmp_path):
    """SiT's walk row 3 is Table 5's VP ODE row: one measurement, shown by both studies; committing one study
    must not drop the other's row."""
    from ablate.studies.runner import commit

    base = {"point_key": "p1", "metric": "eval/fid500/x", "value": 1.5, "status": "ok", "seed": 0, "eval_seed": 0}
    table5 = {**base, "study": "sit_table5", "row": "vp-ode"}
    walk = {**base, "study": "sit_walk", "row": "3", "copied_from": "sit_table5/vp-ode"}
    store, committed = tmp_path / "store.jsonl", tmp_path / "committed.jsonl"
    store.write_text(json.dumps(table5) + "\n" + json.dumps(walk) + "\n")
    committed.write_text(json.dumps(table5) + "\n")
    assert commit("sit_walk", store, committed, echo=lambda *a: None) == 1
    rows = [json.loads(x) for x in committed.read_text().splitlines()]
    assert sorted((r["study"], r["row"]) for r in rows) == [("sit_table5", "vp-ode"), ("sit_walk", "3")]
    assert commit("sit_walk", store, committed, echo=lambda *a: None) == 1  # again: replaced, not duplicated
    assert len(committed.read_text().splitlines()) == 2
