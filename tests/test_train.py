"""Training through the pipeline: exact resume after kill -9, train-once reuse, NaN policy."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

MICRO = ["model.depth=2", "model.hidden_size=64", "model.num_heads=2", "logger=none", "trainer.batch_size=32"]


def _script(out_dir, steps, kill_at=None, extra=(), sig="SIGKILL", sig_rank=0, ckpt_every=2, prelude=""):
    overrides = MICRO + [f"out_dir={out_dir}", f"trainer.steps={steps}", f"trainer.ckpt_every={ckpt_every}", *extra]
    return textwrap.dedent(
        f"""
        import os, signal
        import lightning as L
        from hydra import compose, initialize_config_dir
        with initialize_config_dir(config_dir={os.path.abspath('conf')!r}, version_base="1.3"):
            cfg = compose("config", {overrides!r})
        from ablate.pipeline.build import build_experiment
        from ablate.pipeline.train import train_or_reuse
        {prelude}

        class Kill(L.Callback):
            def on_train_batch_start(self, trainer, module, batch, idx):
                if trainer.global_step == {kill_at!r} and trainer.global_rank == {sig_rank!r}:
                    os.kill(os.getpid(), signal.{sig})

        train_or_reuse(build_experiment(cfg), callbacks=[Kill()])
        """
    )


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


def _final(out_dir):
    (key,) = os.listdir(out_dir / "checkpoints")
    return torch.load(out_dir / "checkpoints" / key / "final.pt", weights_only=True)


def test_kill9_then_resume_ends_with_the_same_weights(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    r = _run(_script(a, steps=6))
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run(_script(b, steps=6, kill_at=5))  # killed after the step-4 checkpoint, inside step 5
    assert r.returncode == -signal.SIGKILL
    (key,) = os.listdir(b / "checkpoints")
    assert (b / "checkpoints" / key / "last.ckpt").exists() and not (b / "checkpoints" / key / "final.pt").exists()
    r = _run(_script(b, steps=6))  # resumes from last.ckpt
    assert r.returncode == 0, r.stderr[-2000:]
    fa, fb = _final(a), _final(b)
    assert fb["info"]["resumed_from"] and fb["info"]["resumed_from"].endswith("last.ckpt")
    for part in ("net", "ema"):
        for k in fa[part]:
            torch.testing.assert_close(fa[part][k], fb[part][k], rtol=0, atol=0, msg=f"{part}.{k}")


def _assert_same(fa, fb, rtol=0.0, atol=0.0):
    for part in ("net", "ema"):
        for k in fa[part]:
            torch.testing.assert_close(fa[part][k], fb[part][k], rtol=rtol, atol=atol, msg=f"{part}.{k}")


def _last_step(out_dir):
    (key,) = os.listdir(out_dir / "checkpoints")
    assert not (out_dir / "checkpoints" / key / "final.pt").exists()
    return torch.load(out_dir / "checkpoints" / key / "last.ckpt", weights_only=True)["global_step"]


@pytest.mark.parametrize("sig", ["SIGUSR2", "SIGTERM"])
def test_stop_signal_saves_last_ckpt_at_the_step_end_and_the_rerun_resumes_exactly(tmp_path, sig):
    """submitit's pre-timeout SIGUSR2 / SLURM's SIGTERM: save at the end of the current step, stop, resume."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run(_script(a, steps=6)).returncode == 0
    r = _run(_script(b, steps=6, kill_at=3, sig=sig, ckpt_every=100))  # no periodic checkpoint before the end
    assert r.returncode != 0 and "TrainingInterrupted: training stopped on a signal at step 4 of 6" in r.stderr
    assert _last_step(b) == 4  # the step running when the signal came was finished and saved
    assert _run(_script(b, steps=6)).returncode == 0
    _assert_same(_final(a), _final(b))


def test_stop_signal_on_one_ddp_rank_stops_every_rank_at_the_same_step(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    fp32 = ["trainer.precision=32-true"]  # one process vs two agree to rounding in fp32 (bf16 rounds each half)
    assert _run(_script(a, steps=6, extra=fp32)).returncode == 0
    r = _run(_script(b, steps=6, kill_at=3, sig="SIGUSR2", sig_rank=1, ckpt_every=100,
                     extra=["trainer=ddp_cpu", *fp32]))
    assert r.returncode != 0 and "training stopped on a signal at step 4 of 6" in r.stderr, r.stderr[-2000:]
    assert _last_step(b) == 4  # rank 1 alone was signalled: both ranks agreed, saved together and stopped
    assert _run(_script(b, steps=6, extra=fp32)).returncode == 0  # resumed on one process
    _assert_same(_final(a), _final(b), rtol=1e-5, atol=1e-6)


def test_stop_signal_calls_the_previous_handler_after_saving(tmp_path):
    """Under submitit the previous SIGUSR2 handler requeues the job: it must run after last.ckpt exists."""
    prelude = textwrap.indent(textwrap.dedent(f"""
        import glob
        def previous(signum, frame):
            saved = glob.glob({str(tmp_path / "checkpoints" / "*" / "last.ckpt")!r})
            open({str(tmp_path / "previous.txt")!r}, "w").write(f"{{signum}} {{len(saved)}}")
        signal.signal(signal.SIGUSR2, previous)
        """), " " * 8)
    r = _run(_script(tmp_path, steps=6, kill_at=2, sig="SIGUSR2", ckpt_every=100, prelude=prelude.strip()))
    assert "TrainingInterrupted" in r.stderr, r.stderr[-2000:]
    assert (tmp_path / "previous.txt").read_text() == f"{int(signal.SIGUSR2)} 1"


def test_second_run_of_same_training_config_reuses_the_checkpoint(tmp_path, compose):
    from ablate.pipeline.build import build_experiment
    from ablate.pipeline.train import train_or_reuse

    cfg = compose(MICRO + [f"out_dir={tmp_path}", "trainer.steps=2"])
    _, ema1, info1 = train_or_reuse(build_experiment(cfg))
    cfg2 = compose(MICRO + [f"out_dir={tmp_path}", "trainer.steps=2", "sampler=sde", "sde_coef=sigma"])
    _, ema2, info2 = train_or_reuse(build_experiment(cfg2))
    assert info1["reused"] is False and info2["reused"] is True
    assert info1["train_key"] == info2["train_key"]
    for k in ema1:
        assert torch.equal(ema1[k], ema2[k])


def test_nan_loss_stops_with_the_step_named(tmp_path, compose):
    from ablate.pipeline.build import build_experiment
    from ablate.pipeline.lit import NonFiniteLossError
    from ablate.pipeline.train import train_or_reuse

    cfg = compose(MICRO + [f"out_dir={tmp_path}", "trainer.steps=3", "trainer.lr=1e30", "trainer.nan_policy=stop"])
    with pytest.raises(NonFiniteLossError, match=r"step \d+"):
        train_or_reuse(build_experiment(cfg))
