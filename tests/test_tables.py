"""Tables, claims and the reading: cells with intervals over training and evaluation seeds, budgets never mixed,
verdicts computed from paired differences, writers, plots, W&B import and `make tables` on a synthetic store."""

import json
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ablate.results import append_rows
from ablate.studies import load_study
from ablate.studies.claims import claim_results, ordering, power
from ablate.studies.plots import plot_fid_over_training, plot_fid_vs_gflops
from ablate.studies.tables import TableError, study_table
from ablate.studies.wandb_import import read_wandb_export, rows_from_wandb_runs
from ablate.studies.writers import claims_markdown, to_latex, to_markdown

ROOT = Path(__file__).resolve().parents[1]
BUDGET = "train 600x128 32-true; eval 500 test/auto fp32"


def _row(row, seed, value, study="sit_walk", eval_seed=0, step=600, status="ok", metric_base="fid", **kw):
    kw.setdefault("budget", BUDGET)
    kw.setdefault("train_steps", step)
    kw.setdefault("sample_gflops", 3.95)
    return dict(study=study, row=row, seed=seed, eval_seed=eval_seed, value=value, step=step,
                status=status, metric_base=metric_base, metric=f"eval/{metric_base}500/x", num_samples=500,
                extractor="ablate-digits", model_gflops=0.079, nfe=50.0,
                train_gflops=3 * 0.079 * step * 128, sampler_tag="x", **kw)


def _synthetic():
    rows = [_row("0", s, v) for s, v in enumerate([30.0, 34.0, 35.0])]
    rows += [_row("4a", 0, 99.0, step=300, train_steps=600), _row("4a", 0, 20.0), _row("4a", 1, 22.0)]
    rows += [_row("4b", 0, 18.0, eval_seed=e) for e in range(2)]  # one training seed, two eval seeds
    rows[-1]["value"] = 19.0
    rows += [_row("5a", 0, 1.0, status="failed", error="OOM")]  # only a failed run
    rows += [_row("3", 0, 5.0, study="other"), _row("3", 0, 6.0, metric_base="kid")]  # not this study / metric
    return pd.DataFrame(rows)


def test_study_table_cells_have_intervals_over_seeds_and_no_run_cells():
    from scipy import stats

    study = load_study("sit_walk")
    t = study_table(study, _synthetic(), "cpu", gflops=False).set_index("row")
    assert list(t.index) == [r.id for r in study.rows]
    v = np.array([30.0, 34.0, 35.0])
    lo, hi = stats.t.interval(0.95, 2, v.mean(), stats.sem(v))
    assert (t.loc["0", "n_train"], t.loc["0", "n_eval"]) == (3, 1)
    assert t.loc["0", "ours_mean"] == pytest.approx(v.mean())
    assert (t.loc["0", "ours_lo"], t.loc["0", "ours_hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert "train seeds" in t.loc["0", "sources"] and "eval seeds" in t.loc["0", "sources"]
    assert t.loc["4a", "n"] == 2 and t.loc["4a", "ours_mean"] == pytest.approx(21.0)  # the in-loop row is left out
    assert t.loc["4b", "n_train"] == 1 and t.loc["4b", "n_eval"] == 2 and "eval noise only" in t.loc["4b", "cell"]
    assert t.loc["5a", "status"].startswith("failed") and t.loc["5a", "n"] == 0
    assert t.loc["3", "status"] == "no run" and math.isnan(t.loc["3", "ours_mean"])
    md = to_markdown(t.reset_index(), study, "cpu")
    assert md.count("| no run |") == 6  # 1, 2, 3, 5b, 5c, 6 (5a failed)
    assert f"| 44.2 | 3 | 33.00 [{lo:.2f}, {hi:.2f}] (n=3x1) |" in md  # paper rank 3 of the 4 rows with both
    assert "ours - paper" not in md and "our rank" in md  # CPU scale: ranks, not differences


def test_a_cell_that_would_mix_budgets_is_refused():
    df = _synthetic()
    df = pd.concat([df, pd.DataFrame([_row("4a", 2, 25.0, budget="train 300x128 32-true; eval 500 test/auto fp32")])])
    with pytest.raises(TableError, match=r"sit_walk row 4a: results at 2 budgets.*train 300x128"):
        study_table("sit_walk", df, "cpu", gflops=False)
    t = study_table("sit_walk", df, "cpu", gflops=False, budget=BUDGET).set_index("row")
    assert t.loc["4a", "n"] == 2  # one budget chosen explicitly


def _paired_store(diff, noise=0.3, seeds=5, evals=2, rng=None, rows=("0", "1")):
    """Row b = row a + diff per seed, both with a large shared seed effect and small independent noise."""
    rng = rng or np.random.default_rng(0)
    out = []
    for s in range(seeds):
        shared = rng.normal(0, 5.0)
        for e in range(evals):
            out.append(_row(rows[0], s, 30 + shared + rng.normal(0, noise), eval_seed=e))
            out.append(_row(rows[1], s, 30 + diff + shared + rng.normal(0, noise), eval_seed=e))
    return pd.DataFrame(out)


def test_pair_claims_hold_tie_or_reverse_from_the_paired_interval():
    study = load_study("sit_walk")  # claim 0-1: paper 44.2 -> 43.6 (row 1 better)
    verdicts = {}
    for diff in (-3.0, 3.0, 0.0):
        (c,) = [c for c in claim_results(study, _paired_store(diff)) if c.id == "0-1"]
        verdicts[diff] = c.verdict
        assert c.paper.startswith("0 44.2 -> 1 43.6 (-0.60)")
        assert c.ours.startswith("1 - 0 = ") and "(n=5x2)" in c.ours
        assert c.ours_lo <= c.ours_diff <= c.ours_hi
    assert verdicts == {-3.0: "holds", 3.0: "reversed", 0.0: "tie"}
    # An unpaired reading of the same rows would be swamped by the shared seed effect (SD 5): no verdict then.
    others = {c.id: c.verdict for c in claim_results(study, _paired_store(-3.0))}
    assert others["1-2"] == "no run" and others["walk-best"] == "no run"


def test_one_training_seed_shows_values_but_no_verdict():
    study = load_study("sit_walk")
    (c,) = [c for c in claim_results(study, _paired_store(-3.0, seeds=1, evals=3)) if c.id == "0-1"]
    assert c.verdict == "n/a" and "eval noise only" in c.ours


def test_best_and_order_claims_use_the_papers_ranking():
    study = load_study("sit_table5")
    rng = np.random.default_rng(1)
    rows = []
    for s in range(4):
        shared = rng.normal(0, 3)
        for rid, v in (("vp-ode", 15), ("linear-ode", 11), ("gvp-ode", 9), ("vp-sde", 17), ("linear-sde", 11.1),
                       ("gvp-sde", 8.9)):
            rows.append(_row(rid, s, v + shared + rng.normal(0, 0.2), study="sit_table5"))
    res = {c.id: c for c in claim_results(study, pd.DataFrame(rows))}
    assert res["ode-interpolants"].verdict == "holds"  # 15 > 11 > 9 as the paper's 39.8 > 34.8 > 34.6
    assert res["ode-interpolants"].paper == "vp-ode 39.8 > linear-ode 34.8 > gvp-ode 34.6"
    assert res["vp-ode-sde"].verdict == "reversed"  # the paper finds the SDE better on VP (37.8 < 39.8)
    assert res["linear-ode-sde"].verdict == "tie"
    md = claims_markdown(list(res.values()))
    assert "| ode-interpolants |" in md and "**holds**" in md and "**reversed**" in md
    tau = ordering(study, pd.DataFrame(rows))
    assert -1 <= tau.lo <= tau.estimate <= tau.hi <= 1
    pw = power(study, pd.DataFrame(rows))
    assert pw.n_seeds == 4 and 0 < pw.min_difference < 5


def test_latex_escapes_and_is_complete():
    study = load_study("sit_table6")
    t = study_table(study, pd.DataFrame([_row("vp-velocity-w_KL", 0, 12.5, study="sit_table6"),
                                         _row("vp-velocity-w_KL", 1, 13.5, study="sit_table6")]), "cpu",
                    gflops=False)
    tex = to_latex(t, study, "cpu")
    assert tex.count(r" \\") == 1 + 24 and r"vp-velocity-w\_KL" in tex and "13.00 [6.65, 19.35] (n=2x1)" in tex
    assert tex.startswith(r"\begin{table}") and r"\bottomrule" in tex
    body = "\n".join(x for x in tex.splitlines() if not x.startswith(r"\label")).replace(" & ", " ")
    assert not re.search(r"(?<!\\)[_&%#]", body), "unescaped LaTeX special character"


def test_dit_scaling_measures_gflops_of_every_row_next_to_the_paper():
    t = study_table("dit_scaling", pd.DataFrame(), "cpu")
    assert len(t) == 14
    # Paper-scale models reproduce DiT Table 4's GFLOPs (forward GMACs per image) to 1 % (the table rounds to
    # 2 decimals: S/8 measures 0.358 -> 0.36) and to 2e-4 for the large ones.
    rel = (t["gflops_paper_measured"] / t["gflops_paper"] - 1).abs()
    assert (rel < 1e-2).all() and (rel[t["gflops_paper"] > 50] < 2e-4).all(), rel.tolist()
    ran = t[~t["status"].str.startswith("skipped")]
    assert (ran["gflops_ours"] > 0).all() and (ran["gflops_ours"] < ran["gflops_paper"]).all()
    for size in ("S", "B", "L", "XL"):  # within each size a smaller patch (more tokens) costs more, as in the paper
        g = ran[ran["series"] == size].set_index("row")["gflops_ours"]
        assert g[f"{size}/8"] < g[f"{size}/4"] < g[f"{size}/2"]


def test_the_guidance_table_shows_sampling_gflops_per_image():
    study = load_study("cfg_sweep")
    t = study_table(study, pd.DataFrame([_row("cfg2", 0, 3.0, study="cfg_sweep", sample_gflops=7.9)]), "cpu",
                    gflops=False)
    md = to_markdown(t, study, "cpu")
    assert "GFLOPs per sample" in md and "| 7.9 |" in md


def test_plots_write_pngs(tmp_path):
    t = study_table("dit_scaling", pd.DataFrame([_row("S/8", 0, 80.0, study="dit_scaling"),
                                                 _row("S/8", 1, 82.0, study="dit_scaling")]), "cpu", gflops=False)
    p = plot_fid_vs_gflops(t, tmp_path / "a.png")
    q = plot_fid_over_training(_synthetic(), tmp_path / "b.png")
    for f in (p, q):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000


def _export(tmp_path):
    """What `wandb.Api().runs(project)` yields, as exported by ablate.studies.wandb_import.export_wandb."""
    cfg = {"study": "sit_walk", "row": "4a", "seed": 0, "interpolant": "linear", "sampler_tag": "ode_heun-nfe50-cfg1.0",
           "train_steps": 1000, "objects": {"nested": "dropped"}}
    runs = [
        {"id": "a1", "name": "sit_walk-x-ode", "state": "finished", "config": cfg,
         "summary": {"eval/fid1k/ode_heun-nfe50-cfg1.0": 21.0, "eval/model_gflops": 0.079, "eval/nfe": 50,
                     "eval/samples": {"_type": "image-file"}},
         "history": [
             {"train/loss": 0.3, "trainer/global_step": 10},
             {"eval/fid1k/ode_heun-nfe50-cfg1.0": 40.0, "eval/train_gflops": 1.0, "trainer/global_step": 500},
             {"eval/fid1k/ode_heun-nfe50-cfg1.0": 21.0, "eval/train_gflops": 2.0, "trainer/global_step": 1000},
         ]},
        {"id": "b2", "name": "sit_walk-y-ode", "state": "finished", "config": {**cfg, "seed": 1},
         "summary": {"eval/fid1k/ode_heun-nfe50-cfg1.0": 23.0, "eval/kid1k/ode_heun-nfe50-cfg1.0": 0.01,
                     "trainer/global_step": 1000}},
        {"id": "c3", "name": "crashed", "state": "crashed", "config": {**cfg, "row": "4b"},
         "summary": {"eval/fid1k/ode_heun-nfe50-cfg1.0": 1.0}},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"project": "me/ablate", "runs": runs}))
    return path


def test_wandb_export_becomes_store_rows_and_a_table(tmp_path):
    df = read_wandb_export(_export(tmp_path))
    fid = df[df["metric_base"] == "fid"]
    assert len(fid) == 4 and set(df["metric_base"]) == {"fid", "kid"}
    a1 = fid[fid["source"] == "wandb:me/ablate/a1"].sort_values("step")
    assert a1["value"].tolist() == [40.0, 21.0] and a1["step"].tolist() == [500, 1000]
    assert (a1["num_samples"] == 1000).all() and "objects" not in df.columns
    t = study_table("sit_walk", df, "cpu", gflops=False).set_index("row")
    assert t.loc["4a", "n"] == 2 and t.loc["4a", "ours_mean"] == pytest.approx(22.0)  # final FID of each seed
    assert t.loc["4b", "n"] == 0  # the crashed run does not count

    class FakeRun:  # the attribute interface of a live wandb Run
        id, state, config = "z9", "finished", {"study": "sit_walk", "row": "6", "seed": 0}
        summary = {"eval/fid1k/sde_em-w_kl_eta-nfe50-cfg1.0": 19.0}
        history = None

    (r,) = rows_from_wandb_runs([FakeRun()], "me/ablate")
    assert (r["row"], r["value"], r["sampler_tag"]) == ("6", 19.0, "sde_em-w_kl_eta-nfe50-cfg1.0")


def _make_tables(tmp_path, results, out, env=()):
    cmd = ["make", "-o", ".venv/.installed", "tables", f"RESULTS={results}", f"TABLES_OUT={out}", *env]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]


def test_make_tables_on_a_tiny_synthetic_store(tmp_path):
    store = tmp_path / "results.jsonl"
    df = _paired_store(-3.0, seeds=3, evals=2, rows=("0", "1"))
    df = pd.concat([df, _paired_store(-9.0, seeds=3, evals=2, rows=("0", "4a")).query("row == '4a'")])
    append_rows(store, df.to_dict("records"))
    out = tmp_path / "page"
    _make_tables(tmp_path, store, out)
    from ablate.studies import available_studies

    for name in available_studies():
        assert (out / "tables" / f"{name}.md").exists() and (out / "tables" / f"{name}.tex").exists()
    for png in ("dit_scaling_fid_vs_gflops", "sit_sizes_fid_vs_gflops", "nfe_sweep_fid_vs_nfe",
                "cfg_sweep_fid_vs_cfg", "fid_over_training"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 5000
    walk = (out / "tables" / "sit_walk.md").read_text()
    assert "(n=3x2)" in walk and "| 0-1 |" in walk and "**holds**" in walk
    assert "FID floor at this budget" in walk and "Power: with 3 training seeds" in walk
    page = (out / "README.md").read_text()
    assert "[sit_walk](tables/sit_walk.md) | 10 | 3 | 3 |" in page and "plots/fid_over_training.png" in page
    for r in load_study("dit_scaling").rows:  # every DiT Table 4 row is on the page with its number
        assert f"| {r.id} | " in page and f"| {r.paper['fid50k']:g} |" in page
    reading = (out / "reading.md").read_text()
    assert "## `sit_walk`" in reading and "| 0-1 |" in reading and "stats.t.interval" in reading
    assert not re.search(r"/(work|tmp|root|home)/", reading + page + walk), "absolute path on a page"


@pytest.mark.slow
def test_make_tables_rebuilds_the_committed_page_from_the_committed_rows(tmp_path):
    out = tmp_path / "page"
    _make_tables(tmp_path, ROOT / "results" / "cpu" / "results.jsonl", out)
    for f in ["README.md", "reading.md", *[f"tables/{p.name}" for p in (ROOT / "results" / "tables").iterdir()]]:
        assert (out / f).read_text() == (ROOT / "results" / f).read_text(), f
    for p in (ROOT / "results" / "plots").iterdir():
        assert (out / "plots" / p.name).read_bytes() == p.read_bytes(), p.name
