"""Table builder: paper/ours/difference with "no run" cells and mean/std over seeds, Kendall tau, writers,
plots, W&B import (offline, from an exported history) and `make tables` on a tiny synthetic store."""

import json
import math
import os
import re
import statistics
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from ablate.results import append_rows
from ablate.studies import load_study
from ablate.tables import (
    kendall_tau,
    ordering,
    plot_fid_over_training,
    plot_fid_vs_gflops,
    read_wandb_export,
    rows_from_wandb_runs,
    study_table,
    to_latex,
    to_markdown,
)

ROOT = Path(__file__).resolve().parents[1]


def _row(row, seed, value, study="sit_walk", step=1000, status="ok", metric_base="fid", **kw):
    return dict(study=study, row=row, seed=seed, value=value, step=step, status=status, metric_base=metric_base,
                metric=f"eval/{metric_base}1k/x", num_samples=1000, extractor="ablate-digits", model_gflops=0.079,
                nfe=50.0, train_gflops=3 * 0.079 * step * 128, sampler_tag="x", **kw)


def _synthetic():
    rows = [_row("0", s, v) for s, v in enumerate([30.0, 34.0, 35.0])]
    rows += [_row("4a", 0, 99.0, step=500), _row("4a", 0, 20.0), _row("4a", 1, 22.0, step=999)]  # final step wins
    rows += [_row("4b", 0, 50.0), _row("4b", 0, 18.0)]  # a rerun at the same step: the last one counts
    rows += [_row("5a", 0, 1.0, status="failed", error="OOM")]  # only a failed run
    rows += [_row("3", 0, 5.0, study="other"), _row("3", 0, 6.0, metric_base="kid")]  # not this study / metric
    return pd.DataFrame(rows)


def test_study_table_joins_paper_and_ours_with_mean_std_and_no_run_cells():
    study = load_study("sit_walk")
    t = study_table(study, _synthetic(), "cpu", gflops=False).set_index("row")
    assert list(t.index) == [r.id for r in study.rows]
    assert t.loc["0", "n"] == 3
    assert t.loc["0", "ours_mean"] == pytest.approx(statistics.mean([30, 34, 35]))
    assert t.loc["0", "ours_std"] == pytest.approx(statistics.stdev([30, 34, 35]))  # sample std, ddof = 1
    assert t.loc["0", "diff"] == pytest.approx(statistics.mean([30, 34, 35]) - 44.2)
    assert t.loc["0", "paper"] == 44.2
    assert t.loc["4a", "n"] == 2 and t.loc["4a", "ours_mean"] == pytest.approx(21.0)  # per seed, highest step
    assert t.loc["4b", "n"] == 1 and t.loc["4b", "ours_mean"] == 18.0 and math.isnan(t.loc["4b", "ours_std"])
    assert t.loc["5a", "status"].startswith("failed") and t.loc["5a", "n"] == 0
    assert t.loc["3", "status"] == "no run" and math.isnan(t.loc["3", "ours_mean"]) and math.isnan(t.loc["3", "diff"])
    md = to_markdown(t.reset_index(), study, "cpu")
    assert md.count("| no run |") == 6  # 1, 2, 3, 5b, 5c, 6
    assert "| 0 | DDPM" in md and "| 44.2 | 33.00 ± 2.65 (n=3) | -11.20 |" in md
    assert "only orderings are" in md


def test_empty_store_gives_a_table_of_no_runs():
    study = load_study("sit_table5")
    t = study_table(study, pd.DataFrame(), "cpu", gflops=False)
    assert len(t) == 6 and (t["status"] == "no run").all() and (t["n"] == 0).all()
    assert math.isnan(ordering(t)["tau"])


def test_dit_scaling_measures_gflops_of_every_row_next_to_the_paper():
    t = study_table("dit_scaling", pd.DataFrame(), "cpu")
    assert len(t) == 14
    # Paper-scale models reproduce DiT Table 4's GFLOPs (forward GMACs per image) to 1 % (the table rounds to
    # 2 decimals: S/8 measures 0.358 -> 0.36) and to 2e-4 for the large ones.
    rel = (t["gflops_paper_measured"] / t["gflops_paper"] - 1).abs()
    assert (rel < 1e-2).all() and (rel[t["gflops_paper"] > 50] < 2e-4).all(), rel.tolist()
    ran = t[~t["status"].str.startswith("skipped")]
    assert (ran["gflops_ours"] > 0).all() and (ran["gflops_ours"] < ran["gflops_paper"]).all()
    # Within each size, a smaller patch (more tokens) costs more, as in the paper.
    for size in ("S", "B", "L", "XL"):
        g = ran[ran["series"] == size].set_index("row")["gflops_ours"]
        assert g[f"{size}/8"] < g[f"{size}/4"] < g[f"{size}/2"]


def test_kendall_tau_matches_scipy_including_ties():
    from scipy.stats import kendalltau

    a = [44.2, 43.6, 39.1, 39.8, 34.8, 34.6, 37.8, 33.6, 32.9, 33.0]
    b = [9.0, 8.0, 7.5, 7.5, 5.0, 6.0, 7.0, 4.0, 4.5, 3.0]
    k = kendall_tau(a, b)
    assert k["tau"] == pytest.approx(kendalltau(a, b).statistic, abs=1e-12)
    assert k["concordant"] + k["discordant"] + 1 == k["pairs"]  # one tie in b
    assert kendall_tau([1, 2, 3], [3, 2, 1])["tau"] == -1.0 and kendall_tau([1, 2, 3], [1, 2, 3])["agree"] == 1.0
    with pytest.raises(ValueError, match="equal length"):
        kendall_tau([1, 2], [1])


def test_latex_escapes_and_is_complete():
    study = load_study("sit_table6")
    t = study_table(study, pd.DataFrame([_row("vp-velocity-w_KL", 0, 12.5, study="sit_table6"),
                                         _row("vp-velocity-w_KL", 1, 13.5, study="sit_table6")]), "cpu",
                    gflops=False)
    tex = to_latex(t, study, "cpu")
    assert tex.count(r" \\") == 1 + 24 and r"vp-velocity-w\_KL" in tex and r"13.00 $\pm$ 0.71 (n=2)" in tex
    assert tex.startswith(r"\begin{table}") and r"\bottomrule" in tex
    body = "\n".join(x for x in tex.splitlines() if not x.startswith(r"\label")).replace(" & ", " ")
    assert not re.search(r"(?<!\\)[_&%#]", body), "unescaped LaTeX special character"


def test_plots_write_pngs(tmp_path):
    t = study_table("dit_scaling", pd.DataFrame([_row("S/8", 0, 80.0, study="dit_scaling", series="S")]), "cpu",
                    gflops=False)
    p = plot_fid_vs_gflops(t, tmp_path / "a.png")
    q = plot_fid_over_training(_synthetic(), tmp_path / "b.png")
    for f in (p, q):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000


def _export(tmp_path):
    """What `wandb.Api().runs(project)` yields, as exported by ablate.tables.export_wandb."""
    cfg = {"study": "sit_walk", "row": "4a", "seed": 0, "interpolant": "linear", "sampler_tag": "ode_heun-nfe50-cfg1.0",
           "config": {"nested": "dropped"}}
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
    assert (a1["num_samples"] == 1000).all() and "config" not in df.columns
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
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]


def test_make_tables_on_a_tiny_synthetic_store(tmp_path):
    store = tmp_path / "results.jsonl"
    append_rows(store, [_row("0", 0, 31.25, interpolant="vp"), _row("4a", 0, 17.5), _row("5b", 0, 16.0)])
    out = tmp_path / "page"
    _make_tables(tmp_path, store, out)
    from ablate.studies import available_studies

    for name in available_studies():
        assert (out / "tables" / f"{name}.md").exists() and (out / "tables" / f"{name}.tex").exists()
    for png in ("dit_scaling_fid_vs_gflops", "sit_sizes_fid_vs_gflops", "nfe_sweep_fid_vs_nfe",
                "cfg_sweep_fid_vs_cfg", "fid_over_training"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 5000
    walk = (out / "tables" / "sit_walk.md").read_text()
    assert "| 44.2 | 31.25 (n=1) | -12.95 |" in walk and "| 34.8 | 17.50 (n=1) | -17.30 |" in walk
    # Three rows with both numbers, paper 44.2 > 34.8 > 33.6 and ours 31.25 > 17.5 > 16: tau = 1.
    assert "Kendall tau-b = +1.00 over 3 rows (3 of 3 untied pairs agree)" in walk
    page = (out / "README.md").read_text()
    assert "[sit_walk](tables/sit_walk.md) | 10 | 3 | 3 | +1.00 |" in page and "plots/fid_over_training.png" in page
    for r in load_study("dit_scaling").rows:  # every DiT Table 4 row is on the page with its number
        assert f"| {r.id} | " in page and f"| {r.paper['fid50k']} |" in page


@pytest.mark.slow
def test_make_tables_rebuilds_the_committed_page_from_the_committed_rows(tmp_path):
    out = tmp_path / "page"
    _make_tables(tmp_path, ROOT / "results" / "cpu" / "results.jsonl", out)
    for f in ["README.md", *[f"tables/{p.name}" for p in (ROOT / "results" / "tables").iterdir()]]:
        assert (out / f).read_text() == (ROOT / "results" / f).read_text(), f
    for p in (ROOT / "results" / "plots").iterdir():
        assert (out / "plots" / p.name).read_bytes() == p.read_bytes(), p.name
