"""Training through the pipeline: exact resume after kill -9, train-once reuse, NaN policy."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

MICRO = ["+model.depth=2", "+model.hidden_size=64", "+model.num_heads=2", "logger=none", "trainer.batch_size=32"]


def _script(out_dir, steps, kill_at=None, extra=()):
    overrides = MICRO + [f"out_dir={out_dir}", f"trainer.steps={steps}", "trainer.ckpt_every=2", *extra]
    return textwrap.dedent(
        f"""
        import os, signal
        import lightning as L
        from hydra import compose, initialize_config_dir
        with initialize_config_dir(config_dir={os.path.abspath('conf')!r}, version_base="1.3"):
            cfg = compose("config", {overrides!r})
        from ablate.run import train_or_reuse

        class Kill(L.Callback):
            def on_train_batch_start(self, trainer, module, batch, idx):
                if trainer.global_step == {kill_at!r}:
                    os.kill(os.getpid(), signal.SIGKILL)

        train_or_reuse(cfg, callbacks=[Kill()])
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


def test_second_run_of_same_training_config_reuses_the_checkpoint(tmp_path, compose):
    from ablate.run import train_or_reuse

    cfg = compose(MICRO + [f"out_dir={tmp_path}", "trainer.steps=2"])
    _, ema1, info1 = train_or_reuse(cfg)
    cfg2 = compose(MICRO + [f"out_dir={tmp_path}", "trainer.steps=2", "sampler=sde", "diffusion=sigma"])
    _, ema2, info2 = train_or_reuse(cfg2)
    assert info1["reused"] is False and info2["reused"] is True
    assert info1["train_key"] == info2["train_key"]
    for k in ema1:
        assert torch.equal(ema1[k], ema2[k])


def test_nan_loss_stops_with_the_step_named(tmp_path, compose):
    from ablate.lit import NonFiniteLossError
    from ablate.run import train_or_reuse

    cfg = compose(MICRO + [f"out_dir={tmp_path}", "trainer.steps=3", "trainer.lr=1e30", "trainer.nan_policy=stop"])
    with pytest.raises(NonFiniteLossError, match=r"step \d+"):
        train_or_reuse(cfg)
