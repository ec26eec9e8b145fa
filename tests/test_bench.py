"""Smoke tests of the benchmark code paths (benchmarks/): structure and NFE counts with tiny budgets, no timings."""

import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import evaluation  # noqa: E402
import sampling  # noqa: E402


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-thread OpenMP job on a busy 2-core machine can slow down 10-40x
    yield
    torch.set_num_threads(threads)


def test_spread_is_min_median_max():
    assert common.spread([3.0, 1.0, 2.0, 10.0]) == dict(min=1.0, median=2.5, max=10.0, n=4)
    with pytest.raises(ValueError, match="empty"):
        common.spread([])
    with pytest.raises(ValueError, match="valid choices"):
        with common.attention_backend("flash3"):
            pass


def test_sit_reference_em_matches_ablate_em_at_twice_the_nfe(one_thread):
    """Same noise, same result: the reference's second evaluation changes the cost, not the sample."""
    net, _ = sampling.load_network(None)
    torch.manual_seed(1)
    for p in net.final_layer.parameters():  # adaLN-zero init outputs 0: give the output layer weights
        p.data.normal_(0, 0.1)
    model = sampling.paper_time_model(net)
    ours = sampling.build_sampler("sde_em", steps=6, interpolant="linear", prediction="velocity")
    ref = sampling._sit_reference(6)
    a, b = sampling._run(ours, model, 3), sampling._run(ref, model, 3)
    assert a.nfe == 6 and b.nfe == 12 == ref.expected_nfe
    torch.testing.assert_close(a.x, b.x, rtol=1e-5, atol=1e-6)
    assert sampling.nfe_250(batch=1) == dict(steps=250, last_step="mean", ablate_nfe=250, sit_reference_nfe=500)


def test_every_sampler_counts_its_nfe(one_thread):
    net, _ = sampling.load_network(None)
    suite = sampling.sampler_suite(4, tolerances=((1e-2, 1e-2),))
    res = sampling.bench_samplers(net, suite, batch=2, repeats=1)
    assert set(res) == set(suite)
    for name, r in res.items():
        if r["expected_nfe"] is not None:  # fixed-step samplers: the counted NFE is the closed form
            assert r["nfe_per_image"] == r["expected_nfe"], name
        assert r["wall_s"]["n"] == 1 and r["images_per_s"]["median"] == pytest.approx(2 / r["wall_s"]["median"])
    assert res["sde_em-4"]["nfe_per_image"] == res["ode_euler-4"]["nfe_per_image"] == 4
    assert res["ode_heun-2"]["nfe_per_image"] == 4 and res["sde_heun-3"]["nfe_per_image"] == 2 * 2 + 1
    assert res["sit_reference_em-4"]["nfe_per_image"] == 8
    assert res["sde_em-4-batch_noise"]["nfe_per_image"] == 4
    assert res["ode_euler-4-cfg1.5"]["nfe_per_image"] == 4  # one NFE = one doubled-batch call
    assert res["ode_dopri5-atol0.01-rtol0.01"]["nfe_per_image"] >= 6  # dopri5: >= 1 step of 6 stages


def test_run_all_smoke_writes_json_and_markdown(tmp_path, one_thread):
    import run_all

    rep = run_all.main(["--smoke", "--parts", "train", "sampling", "evaluation", "--out", str(tmp_path)])
    assert not rep["errors"], rep["errors"]
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert set(saved["parts"]) == {"train", "sampling", "evaluation"}
    assert {"cpu", "cpu_count", "torch_threads", "torch"} <= set(saved["machine"])
    md = (tmp_path / "bench.md").read_text()
    for heading in ("## Training step", "## Sampling", "## Evaluation"):
        assert heading in md
    train = saved["parts"]["train"]
    rows = train["groups"]["smoke"]["results"]
    assert {(r["mode"], r["attention"]) for r in rows} == {(m, a) for m in ("fp32", "bf16") for a in ("sdpa", "math")}
    assert set(train["ratios"]["tiny-8"]) == {"bf16 / fp32", "sdpa / math (fp32)"}
    s = saved["parts"]["sampling"]
    assert s["acceptance"]["sde_nfe"] == s["acceptance"]["euler_nfe"] == 4
    assert s["acceptance"]["ablate_nfe"] == 250 and s["acceptance"]["sit_reference_nfe"] == 500
    assert set(s["fid_effect"]["variants"]) == {"fp32", "bf16"}
    assert s["fid_effect"]["variants"]["fp32"]["max_abs_diff_vs_fp32"] == 0.0
    for v in s["ratios"].values():
        assert v["min"] <= v["median"] <= v["max"]
    e = saved["parts"]["evaluation"]
    assert e["extractor"]["feature_dim"] == 64 and [f["dim"] for f in e["frechet"]] == [64, 256]
    from ablate.metrics import inception_weights_path

    try:
        inception_weights_path()
    except FileNotFoundError:
        assert e["inception"]["skipped"] == "no local weights"
    else:
        assert e["inception"]["feature_dim"] == 2048


def test_frechet_time_reports_the_closed_form_distance():
    import numpy as np

    rep = evaluation.frechet_time(8, repeats=1, warmup=0)
    rng = np.random.default_rng(8)
    (m1, s1), (m2, s2) = evaluation._random_gaussian(8, rng), evaluation._random_gaussian(8, rng)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(w)) @ v.T
    tr = np.sqrt(np.linalg.eigvalsh(r1 @ s2 @ r1)).sum()
    assert rep["value"] == pytest.approx(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr, rel=1e-9)


@pytest.mark.slow
def test_sweep_launches_two_trainings_not_four():
    import sweep

    rep = sweep.run(True, train_steps=2)
    assert rep["reuse"]["trainings"] == 2 and rep["reuse"]["checkpoint_dirs"] == 2 and rep["reuse"]["ok_rows"] == 4
    assert rep["naive"]["trainings"] == 4 and rep["naive"]["checkpoint_dirs"] == 4 and rep["naive"]["ok_rows"] == 4


def test_committed_benchmark_results_carry_no_path_of_the_machine():
    """Recorded commands name the script relative to the repository and temporary folders as <tmp>."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"(?<![\w.<])/(work|home|root|tmp|Users|check)/")
    files = [*(root / "benchmarks" / "results").glob("*.json"), *(root / "benchmarks" / "results").glob("*.md")]
    assert files
    for f in files:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            assert not pattern.search(line), (f.name, n, line[:200])
