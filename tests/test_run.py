"""End to end on the embedded data: every prediction x interpolant x time runs; a 2x2 sweep trains twice."""

import os
import subprocess
import sys

import pytest

from ablate.results import read_results

FAST = ["+model.depth=2", "+model.hidden_size=64", "+model.num_heads=2", "logger=none", "trainer.batch_size=32",
        "trainer.steps=2", "eval.num_samples=20", "eval.batch_size=20", "sampler.steps=2"]


@pytest.mark.parametrize(
    "axes",
    [[f"prediction={p}", f"interpolant={i}"] for p in ("velocity", "score", "noise", "x0")
     for i in ("linear", "gvp", "vp")]
    + [["time=discrete", "prediction=noise", "interpolant=vp", "sampler=ddpm"],
       ["time=discrete", "prediction=noise", "interpolant=vp", "sampler=ddim"]],
    ids=lambda a: "-".join(x.split("=")[1] for x in a),
)
def test_short_run_per_prediction_interpolant_time(compose, tmp_path, axes):
    from ablate.run import run

    cfg = compose(FAST + axes + [f"out_dir={tmp_path}"])
    out = run(cfg, job_dir=tmp_path / "job")
    (row,) = out["rows"]
    assert row["status"] == "ok" and row["metric"].startswith("eval/fid20/")
    assert row["value"] > 0 and row["nfe"] > 0 and row["model_gflops"] > 0
    assert row["sample_gflops"] == pytest.approx(row["nfe"] * row["model_gflops"])
    assert row["train_gflops"] == pytest.approx(3 * row["model_gflops"] * 2 * 32)
    assert (tmp_path / "job" / "samples.png").exists()
    df = read_results(tmp_path / "results.jsonl")
    assert len(df) == 1 and df["prediction"].iloc[0] == cfg.prediction.name


def test_2x2_sweep_gives_4_rows_from_exactly_2_trainings(tmp_path):
    cmd = [sys.executable, "-m", "ablate.run", "-m", "interpolant=vp,linear", "sampler=ode,sde",
           f"out_dir={tmp_path}", *FAST]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=os.getcwd())
    assert r.returncode == 0, r.stderr[-3000:]
    df = read_results(tmp_path / "results.jsonl")
    assert len(df) == 4 and (df["status"] == "ok").all()
    assert df["train_key"].nunique() == 2
    assert sorted(df["reused_checkpoint"].tolist()) == [False, False, True, True]
    assert len(os.listdir(tmp_path / "checkpoints")) == 2
    assert set(df["sampler"]) == {"ode", "sde"} and set(df["interpolant"]) == {"vp", "linear"}


def test_a_failing_sweep_job_is_recorded_and_does_not_stop_the_others(tmp_path):
    # data=image_folder without its mandatory root fails inside its job; the digits job still runs.
    cmd = [sys.executable, "-m", "ablate.run", "-m", "data=digits,image_folder",
           f"out_dir={tmp_path}", *FAST]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=os.getcwd())
    assert r.returncode == 0, r.stderr[-3000:]
    df = read_results(tmp_path / "results.jsonl")
    assert sorted(df["status"].tolist()) == ["failed", "ok"]
    failed = df[df["status"] == "failed"].iloc[0]
    assert "data.root" in failed["error"]


def test_in_loop_evaluation_and_standalone_evaluation(tmp_path):
    cmd = [sys.executable, "-m", "ablate.run", *FAST, "trainer.steps=4", "eval.every_n_steps=2", f"out_dir={tmp_path}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=os.getcwd())
    assert r.returncode == 0, r.stderr[-3000:]
    df = read_results(tmp_path / "results.jsonl")
    assert df["step"].tolist() == [2, 4]  # in-loop at step 2, final at step 4
    (ckpt,) = (tmp_path / "checkpoints").glob("*/final.pt")
    cmd = [sys.executable, "-m", "ablate.evaluate", *FAST, "trainer.steps=4", f"+checkpoint={ckpt}",
           "sampler=sde", f"out_dir={tmp_path}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=os.getcwd())
    assert r.returncode == 0, r.stderr[-3000:]
    df = read_results(tmp_path / "results.jsonl")
    assert len(df) == 3 and df["sampler"].iloc[-1] == "sde" and df["step"].iloc[-1] == 4
