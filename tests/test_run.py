"""End to end on the embedded data: every prediction x interpolant x time runs; a 2x2 sweep trains twice; a rerun
never duplicates a row; a checkpoint is evaluated with its own training axes."""

import json
import os
import subprocess
import sys

import pytest

from ablate.results import read_results

FAST = ["model.depth=2", "model.hidden_size=64", "model.num_heads=2", "logger=none", "trainer.batch_size=32",
        "trainer.steps=2", "eval.num_samples=20", "eval.batch_size=20", "sampler.steps=2"]


def _cli(module, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=os.getcwd())


@pytest.mark.parametrize(
    "axes",
    [[f"prediction={p}", f"interpolant={i}"] for p in ("velocity", "score", "noise", "x0")
     for i in ("linear", "gvp", "vp")]
    + [["time=discrete", "prediction=noise", "interpolant=vp", "sampler=ddpm"],
       ["time=discrete", "prediction=noise", "interpolant=vp", "sampler=ddim"]],
    ids=lambda a: "-".join(x.split("=")[1] for x in a),
)
def test_short_run_per_prediction_interpolant_time(compose, tmp_path, axes):
    from ablate.pipeline.runner import run

    cfg = compose(FAST + axes + [f"out_dir={tmp_path}"])
    out = run(cfg, job_dir=tmp_path / "job")
    (row,) = out["rows"]
    assert row["status"] == "ok" and row["metric"].startswith("eval/fid20/")
    assert row["value"] > 0 and row["nfe"] > 0 and row["model_gflops"] > 0
    assert row["sample_gflops"] == pytest.approx(row["nfe"] * row["model_gflops"])
    assert row["train_gflops"] == pytest.approx(3 * row["model_gflops"] * 2 * 32)
    assert row["samples_png"] == "job/samples.png" and (tmp_path / "job" / "samples.png").exists()
    df = read_results(tmp_path / "results.jsonl")
    assert len(df) == 1 and df["prediction"].iloc[0] == cfg.prediction.kind


def test_the_sample_grid_is_at_least_512_pixels_wide_with_one_block_per_data_pixel(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from ablate.pipeline.evaluation import save_grid

    images = torch.rand(64, 1, 8, 8) * 2 - 1
    img = np.asarray(Image.open(save_grid(images, tmp_path / "g.png", 64)).convert("L"))
    assert img.shape[1] >= 512 and img.shape[0] == img.shape[1]
    k = img.shape[1] // 73  # 8 images of 8 px + 9 one-pixel borders = 73 px, upscaled k times
    assert k * 73 == img.shape[1] and k >= 7
    block = img[k: 2 * k, k: 2 * k]  # the first data pixel of the first image: one flat k x k block
    assert (block == block[0, 0]).all()


def test_2x2_sweep_gives_4_rows_from_exactly_2_trainings_and_a_summary(tmp_path):
    r = _cli("ablate.run", "-m", "interpolant=vp,linear", "sampler=ode,sde", f"out_dir={tmp_path}", *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    df = read_results(tmp_path / "results.jsonl")
    assert len(df) == 4 and (df["status"] == "ok").all()
    assert df["train_key"].nunique() == 2
    assert sorted(df["reused_checkpoint"].tolist()) == [False, False, True, True]
    assert len(os.listdir(tmp_path / "checkpoints")) == 2
    assert set(df["sampler"]) == {"ode", "sde"} and set(df["interpolant"]) == {"vp", "linear"}
    out = r.stdout + r.stderr
    assert "sweep summary: 4 points (4 ok, 0 failed)" in out, out[-3000:]
    for k in df["train_key"]:
        assert f"checkpoints/{k}/final.pt" in out


def test_a_failing_sweep_job_is_recorded_and_does_not_stop_the_others(tmp_path):
    # data=image_folder without its mandatory root fails inside its job; the digits job still runs.
    r = _cli("ablate.run", "-m", "data=digits,image_folder", f"out_dir={tmp_path}", *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    df = read_results(tmp_path / "results.jsonl")
    assert sorted(df["status"].tolist()) == ["failed", "ok"]
    failed = df[df["status"] == "failed"].iloc[0]
    assert "data.root" in failed["error"] and failed["data"] == "image_folder"
    assert "1 failed" in r.stdout + r.stderr


def test_a_config_error_in_a_single_run_is_one_message_without_traceback_and_writes_no_row(tmp_path):
    r = _cli("ablate.run", "sampler.solver=heum", f"out_dir={tmp_path}", *FAST)
    assert r.returncode == 2
    assert "ablate: error: sampler: sampler.solver='heum' is not a valid ODE solver" in r.stderr
    assert "Traceback" not in r.stderr and "valid choices" in r.stderr
    assert not (tmp_path / "results.jsonl").exists()


def test_a_repeated_run_leaves_one_row_and_redo_supersedes_it(tmp_path):
    args = [f"out_dir={tmp_path}", *FAST]
    assert _cli("ablate.run", *args).returncode == 0
    r = _cli("ablate.run", *args)
    assert r.returncode == 0 and "already in" in r.stdout and "redo=true" in r.stdout
    assert len(read_results(tmp_path / "results.jsonl")) == 1
    assert _cli("ablate.run", *args, "redo=true").returncode == 0
    df = read_results(tmp_path / "results.jsonl")
    assert len(df) == 1 and df.attrs["superseded"] == 1  # the store is append-only; readers keep the latest
    assert len(read_results(tmp_path / "results.jsonl", latest=False)) == 2


def test_a_point_measured_for_one_study_is_recorded_for_another_without_a_new_evaluation(tmp_path):
    args = [f"out_dir={tmp_path}", *FAST]
    assert _cli("ablate.run", *args, "study=study_a", "row=r1").returncode == 0
    r = _cli("ablate.run", *args, "study=study_b", "row=r2")
    assert r.returncode == 0 and "measured before as study_a/r1" in r.stdout, r.stdout[-2000:]
    df = read_results(tmp_path / "results.jsonl")
    assert sorted(df["study"]) == ["study_a", "study_b"] and df["point_key"].nunique() == 1
    assert df["value"].nunique() == 1  # one measurement, shown twice
    b = df[df["study"] == "study_b"].iloc[0]
    assert b["row"] == "r2" and b["copied_from"] == "study_a/r1"
    r = _cli("ablate.run", *args, "study=study_b", "row=r2")  # a rerun of either label adds nothing
    assert "already in" in r.stdout and "measured before" not in r.stdout
    assert len(read_results(tmp_path / "results.jsonl", latest=False)) == 2
    # a third label, once the store has a copied_from column (empty for the original row)
    assert _cli("ablate.run", *args, "study=study_c", "row=r3").returncode == 0
    df = read_results(tmp_path / "results.jsonl")
    assert sorted(df["copied_from"].fillna("-")) == ["-", "study_a/r1", "study_a/r1"]
    stored = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {type(r["eval_seed"]) for r in stored} == {int}  # copied as stored, not through a float frame


def test_different_budgets_are_different_points_and_rows_say_so(tmp_path):
    for extra in ([], ["eval.num_samples=30"], ["trainer.steps=3"], ["eval.seeds=[0,1]"]):
        assert _cli("ablate.run", f"out_dir={tmp_path}", *FAST, *extra).returncode == 0
    df = read_results(tmp_path / "results.jsonl", latest=False)
    # eval.seeds=[0,1] evaluates only seed 1: seed 0 of that point is the first run's row
    assert len(df) == 4 and df["point_key"].nunique() == 4
    assert df["budget"].nunique() == 3  # 20 samples x 2 steps (eval seeds 0 and 1), 30 samples, 3 steps
    assert sorted(df["eval_seed"].tolist()) == [0, 0, 0, 1]


def test_in_loop_evaluation_and_standalone_evaluation_with_the_checkpoint_axes(tmp_path):
    r = _cli("ablate.run", *FAST, "interpolant=vp", "trainer.steps=4", "eval.every_n_steps=2", f"out_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    df = read_results(tmp_path / "results.jsonl")
    assert df["step"].tolist() == [2, 4]  # in-loop at step 2, final at step 4
    (ckpt,) = (tmp_path / "checkpoints").glob("*/final.pt")
    key = ckpt.parent.name
    stored = json.loads((ckpt.parent / "train_config.json").read_text())
    assert stored["train_key"] == key and stored["groups"]["interpolant"]["_target_"].endswith("VP")

    # Without the training axes on the command line, they come from the checkpoint (vp, 4 steps, tiny depth 2).
    r = _cli("ablate.evaluate", f"+checkpoint={ckpt}", "sampler=sde", "logger=none", "eval.num_samples=20",
             "eval.batch_size=20", "sampler.steps=3", f"out_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    df = read_results(tmp_path / "results.jsonl")
    last = df.iloc[-1]
    assert len(df) == 3 and last["sampler"] == "sde" and last["step"] == 4 and last["interpolant"] == "vp"
    assert last["train_key"] == key and last["train_steps"] == 4 and last["model_depth"] == 2

    # A command-line value that contradicts the checkpoint is refused, naming both.
    r = _cli("ablate.evaluate", f"+checkpoint={ckpt}", "interpolant=linear", "logger=none", f"out_dir={tmp_path}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "interpolant=linear contradicts the checkpoint" in r.stderr and "interpolant=vp" in r.stderr
    assert len(read_results(tmp_path / "results.jsonl")) == 3


def test_the_adm_protocol_exports_the_samples_and_scores_them_against_a_reference_batch(compose, tmp_path,
                                                                                       monkeypatch):
    """eval.protocol=adm on the CPU pipeline: the samples are written as an ADM .npz (uint8 NHWC + labels, uniform
    labels), scored by the ADM evaluator against a reference batch (here a fake one and a random-weight Inception:
    the real weights are not available offline), and the rows say which protocol produced them."""
    import numpy as np

    import ablate.metrics.adm as adm
    from ablate.metrics.adm_io import read_adm_npz
    from ablate.pipeline.runner import run

    net = adm.build_adm_inception(random_init=0, device="cpu")
    monkeypatch.setattr(adm, "build_adm_inception", lambda *a, **k: net)
    ref = tmp_path / "ref.npz"
    real = np.random.default_rng(0).integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
    f = adm.adm_features(real, net)
    np.savez(ref, mu=f["pool"].mean(0), sigma=np.cov(f["pool"], rowvar=False), mu_s=f["spatial"].mean(0),
             sigma_s=np.cov(f["spatial"], rowvar=False), arr_0=real)
    cfg = compose(FAST + [f"out_dir={tmp_path}", "eval.protocol=adm", f"eval.reference={ref}", "eval.labels=uniform",
                          "eval.metrics=[fid,sfid,inception_score,precision,recall]", "eval.num_samples=12"])
    rows = run(cfg, job_dir=tmp_path / "job")["rows"]
    assert sorted(r["metric_base"] for r in rows) == ["fid", "inception_score", "precision", "recall", "sfid"]
    assert {r["protocol"] for r in rows} == {"adm"} and all("adm ref.npz" in r["budget"] for r in rows)
    images, labels = read_adm_npz(tmp_path / rows[0]["samples_npz"])
    assert images.shape == (12, 8, 8, 3) and images.dtype == np.uint8 and labels.shape == (12,)
    assert len(set(labels.tolist())) > 1 and not (labels == np.arange(12) % 10).all()  # uniform, not balanced


def test_the_paper_evaluation_needs_its_reference_batch(compose):
    from ablate.pipeline.build import ConfigError, build_experiment

    with pytest.raises(ConfigError, match="eval needs eval.reference=<value>"):
        build_experiment(compose(["eval=paper"]))
    with pytest.raises(ConfigError, match=r"eval.metrics \['sfid'\] are not torch-fidelity metrics"):
        build_experiment(compose(["eval.metrics=[fid,sfid]"]))
