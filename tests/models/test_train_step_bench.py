"""Smoke test of benchmarks/train_step.py: one tiny repeat, and the MFU arithmetic checked from its JSON."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_step_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_reports_consistent_mfu(bench, tmp_path):
    args = "--presets tiny-8 --modes fp32 --variants fast baseline --batch 8 --repeats 2 --steps 1 --warmup 1"
    threads = torch.get_num_threads()
    try:  # one thread: a 2-thread OpenMP job on a busy 2-core machine can slow down 10-40x
        bench.main([*args.split(), "--threads", "1", "--no-tcmalloc", "--peak-n", "128", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "train_step.json").read_text())
    assert (tmp_path / "train_step.md").exists()
    assert report["peak_fp32"] == max(
        p for r in report["results"] for x in r["repeats"] for p in (x["peak_before"], x["peak_after"])
    )
    for r in report["results"]:
        assert r["gmacs_per_image"] == pytest.approx(0.078954496, rel=1e-9)  # tiny-8 closed form
        ips = [x["images_per_s"] for x in r["repeats"]]
        for x in r["repeats"]:
            assert x["images_per_s"] == pytest.approx(8 / x["step_s"])
        mfu = r["summary"]["mfu_fp32_peak"]
        assert mfu["max"] == pytest.approx(6 * r["gmacs_per_image"] * 1e9 * max(ips) / report["peak_fp32"])
        assert 0 < mfu["min"] <= mfu["median"] <= mfu["max"] < 50  # vs a small-matmul peak
