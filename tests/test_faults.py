"""Fault injection: bad checkpoints, secrets, unwritable output, kills during evaluation, NaN in sampling.

(kill -9 during training + exact resume: tests/test_train.py; a failing sweep job: tests/test_run.py;
concurrent result writers and truncated rows: tests/test_results.py; bad axis values: tests/test_config.py.)
"""

import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ablate.pipeline.checkpointing import CheckpointError, atomic_torch_save, load_checkpoint
from ablate.results import read_results

FAST = ["model.depth=2", "model.hidden_size=64", "model.num_heads=2", "trainer.batch_size=32",
        "trainer.steps=2", "eval.num_samples=20", "eval.batch_size=20", "sampler.steps=2"]
ROOT = Path(__file__).resolve().parents[1]


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    p = tmp_path / "ck.pt"
    atomic_torch_save({"w": torch.randn(100, 100)}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(p)


def test_foreign_checkpoint_gives_a_clear_error(tmp_path):
    import pickle

    p = tmp_path / "foreign.pt"
    p.write_bytes(pickle.dumps(Path("/etc")))  # a pickle that is not a torch checkpoint
    with pytest.raises(CheckpointError, match="foreign|not a torch checkpoint"):
        load_checkpoint(p)
    q = tmp_path / "code.pt"
    torch.save({"obj": Path("/etc")}, q)  # a torch file holding a non-tensor object: refused by weights_only
    with pytest.raises(CheckpointError):
        load_checkpoint(q)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_atomic_save_never_leaves_a_partial_file(tmp_path, monkeypatch):
    p = tmp_path / "ck.pt"
    atomic_torch_save({"v": torch.ones(3)}, p)

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        atomic_torch_save({"v": torch.zeros(3)}, p)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(p)["v"], torch.ones(3))  # the old file is intact
    assert [f.name for f in tmp_path.iterdir()] == ["ck.pt"]  # no temporary left behind


def test_every_torch_load_uses_weights_only():
    offenders = []
    for f in (ROOT / "ablate").rglob("*.py"):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if re.search(r"torch\.load\(", line) and "weights_only=True" not in line and not line.lstrip().startswith(
                ("#", '"', "``")
            ) and "torch.load(..., weights_only=True)" not in line:
                offenders.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, offenders


def test_unwritable_output_dir_fails_before_training(compose, tmp_path):
    from ablate.pipeline.runner import run

    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = compose(FAST + ["logger=none", f"out_dir={blocker}/runs"])  # a path under a regular file
    with pytest.raises(OSError, match="not writable"):
        run(cfg, job_dir=tmp_path / "job")
    assert not (tmp_path / "job").exists() or not any((tmp_path / "job").iterdir())


def test_full_output_dir_fails_before_training(compose, tmp_path, monkeypatch):
    import ablate.pipeline.runner as r

    real_open = open

    def full_open(path, mode="r", *a, **k):
        if ".write_probe_" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", full_open)
    cfg = compose(FAST + ["logger=none", f"out_dir={tmp_path}/runs"])
    with pytest.raises(OSError, match="not writable.*No space left"):
        r.run(cfg, job_dir=tmp_path / "job")
    assert not (tmp_path / "runs" / "checkpoints").exists()


def test_no_secret_reaches_logs_configs_or_results(tmp_path):
    secret = "s3cr3t-wandb-key-0123456789abcdef0123456789"
    env = {**os.environ, "WANDB_API_KEY": secret, "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "ablate.run", *FAST, "logger=wandb", f"out_dir={tmp_path}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert secret not in r.stdout and secret not in r.stderr
    scanned = 0
    for f in tmp_path.rglob("*"):
        if f.is_file():
            scanned += 1
            assert secret.encode() not in f.read_bytes(), f"secret found in {f}"
    assert scanned > 5 and len(read_results(tmp_path / "results.jsonl")) == 1


def test_kill_during_evaluation_leaves_no_partial_row(tmp_path):
    """SIGKILL while the metrics are being computed: the run has trained, but no result row exists."""
    code = textwrap.dedent(
        f"""
        import os, signal
        import ablate.metrics
        from hydra import compose, initialize_config_dir
        with initialize_config_dir(config_dir={str(ROOT / 'conf')!r}, version_base="1.3"):
            cfg = compose("config", {FAST + ['logger=none', f'out_dir={tmp_path}']!r})
        def killed(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        ablate.metrics.compute_metrics = killed
        from ablate.pipeline.runner import run
        run(cfg, job_dir={str(tmp_path / 'job')!r})
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == -signal.SIGKILL
    assert list((tmp_path / "checkpoints").glob("*/final.pt"))  # training finished
    assert read_results(tmp_path / "results.jsonl").empty  # but no partial row


def test_nan_in_sampling_is_caught_with_sampler_named(compose, tmp_path):
    from ablate.pipeline.evaluation import generate
    from ablate.sampling import build_sampler

    sampler = build_sampler("ode_euler", interpolant="linear", prediction="velocity", steps=2)

    def nan_model(x, t, y=None):  # breaks down at t <= 0.5 only
        return torch.where(t.view(-1, 1, 1, 1) <= 0.5, torch.full_like(x, float("nan")), torch.zeros_like(x))

    with pytest.raises(FloatingPointError, match=r"ode_euler.*t = 0\.5.*sample_eps"):
        generate(nan_model, sampler, num_samples=4, batch_size=4, shape=(1, 8, 8), num_classes=0, seed=0,
                 progress=False)


def test_sigkill_of_a_results_writer_keeps_every_complete_row(tmp_path):
    """Kill a writer mid-stream; every row it had written is intact and later appends still parse."""
    path = tmp_path / "r.jsonl"
    code = textwrap.dedent(
        f"""
        from ablate.results import append_rows
        i = 0
        while True:
            append_rows({str(path)!r}, [{{"metric": "m", "value": float(i), "pad": "x" * 5000}}])
            i += 1
        """
    )
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    import time

    deadline = time.time() + 60
    while (not path.exists() or path.stat().st_size < 200_000) and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    from ablate.results import append_rows

    append_rows(path, [{"metric": "after", "value": -1.0}])
    with _maybe_warns():
        df = read_results(path)
    vals = df[df.metric == "m"]["value"].tolist()
    assert vals == [float(i) for i in range(len(vals))] and len(vals) > 10
    assert df["metric"].iloc[-1] == "after"


class _maybe_warns:
    """Accept a 'truncated' warning (the kill can land inside a write) or none."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self.w = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        assert all("truncated" in str(w.message) for w in self.w)
        return False
