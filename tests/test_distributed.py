"""Scale-out on CPU: two gloo processes against one.

- the step randomness and the data stream do not depend on the number of processes (exact, in-process);
- two-process DDP (trainer=ddp_cpu: ddp_fork, gloo) follows the one-process loss trajectory and ends at the
  same weights and EMA (tolerance 1e-5 relative: only the gradient all-reduce changes the summation order);
  the EMA is identical on both ranks;
- 2 steps on one process resumed to 4 steps on two processes equals 4 steps on one process;
- sharded generation + feature gathering gives the single-process FID on the same samples;
- FSDP over two torchrun ranks: the same trajectory, net and EMA sharded alike, full checkpoints that resume
  on one process and the other way round, the single-process FID from the sharded evaluation;
- the submitit launcher in local mode runs a two-point sweep (slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import Callback

from ablate.pipeline.lit import StepSampler
from ablate.pipeline.metric_names import TRAIN_LOSS
from ablate.results import read_results
from ablate.scale.distributed import GlobalBatchRandom, gather_rows, shard_range, sharded_fid, sharded_metrics

# fp32 (not the CPU default bf16 where the processor has it): one process and two agree to fp32 rounding, while
# bf16 autocast rounds a half batch's activations differently from the whole batch's.
FAST = ["model.depth=2", "model.hidden_size=64", "model.num_heads=2", "logger=none", "trainer.batch_size=32",
        "eval.num_samples=20", "eval.batch_size=20", "sampler.steps=2", "trainer.precision=32-true"]
RTOL = 1e-5  # one process vs two: the same arithmetic up to the order of the gradient all-reduce


@pytest.fixture
def one_thread():
    """One torch thread per process while a test forks ranks (restored afterwards for the other tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------------
# In-process: shards, global-batch draws, data stream
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,world", [(10, 1), (10, 2), (11, 2), (7, 3), (2, 4), (0, 2)])
def test_shard_range_partitions_in_rank_order_and_balanced(n, world):
    shards = [shard_range(n, r, world) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_shard_range_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank=2, world=2"):
        shard_range(10, 2, 2)


def _draws():
    return (torch.randn(4, 3, 2), torch.rand(4), torch.randint(0, 1000, (4,)), torch.randn(size=(4, 5)),
            torch.rand((4, 1)))


def test_global_batch_random_gives_each_rank_its_slice_of_the_global_draw():
    world, b = 3, 4
    torch.manual_seed(123)
    big = (torch.randn(12, 3, 2), torch.rand(12), torch.randint(0, 1000, (12,)), torch.randn(12, 5),
           torch.rand(12, 1))
    for rank in range(world):
        torch.manual_seed(123)
        with GlobalBatchRandom(rank, world, b):
            got = _draws()
        for g, full in zip(got, big, strict=True):
            assert torch.equal(g, full[rank * b : (rank + 1) * b])


def test_global_batch_random_refuses_draws_it_cannot_map():
    x = torch.zeros(4)
    with GlobalBatchRandom(0, 2, 4), pytest.raises(RuntimeError, match="randn_like"):
        torch.randn_like(x)
    with GlobalBatchRandom(0, 2, 4), pytest.raises(RuntimeError, match="normal_"):
        x.normal_()
    with GlobalBatchRandom(0, 2, 4), pytest.raises(RuntimeError, match=r"local batch size 4"):
        torch.randn(3, 2)


def test_training_loss_of_two_shards_equals_the_global_batch_loss(compose):
    """The loss closure (noise, t, class dropout inside the DiT) under the mode: per-sample losses of the two
    rank shards, concatenated, equal the one-process per-sample losses of the global batch."""
    from ablate.pipeline.build import build_experiment
    from ablate.pipeline.train import build_training

    for axes in (["prediction=velocity"], ["time=discrete", "prediction=noise", "interpolant=vp",
                                           "sampler=ddpm"]):
        tr = build_training(build_experiment(compose(FAST + axes)))
        # float64: a batch of 8 and two of 4 run different matmul blockings; float32 rounding would differ.
        tr.net.double().train()
        x = torch.randn(8, 1, 8, 8, dtype=torch.float64)
        y = torch.arange(8) % 10
        torch.manual_seed(5)
        full = tr.loss_fn(tr.net, x, y)
        parts = []
        for rank in range(2):
            torch.manual_seed(5)
            with GlobalBatchRandom(rank, 2, 4):
                parts.append(tr.loss_fn(tr.net, x[rank * 4 : rank * 4 + 4], y[rank * 4 : rank * 4 + 4]))
        torch.testing.assert_close(torch.cat(parts), full, rtol=1e-12, atol=1e-12)


def test_step_sampler_stream_is_independent_of_world_size_and_resumes():
    n, gb, seed = 50, 8, 3

    def batches(world, start, steps):  # the global batches, rank shares concatenated in rank order
        its = [iter(StepSampler(n, gb, seed, start_step=start, rank=r, world=world)) for r in range(world)]
        return [[next(it) for it in its for _ in range(gb // world)] for _ in range(steps)]

    one = batches(1, 0, 10)
    assert batches(2, 0, 10) == one
    assert batches(4, 3, 7) == one[3:]  # 3 steps on one process, then 7 on four


# ----------------------------------------------------------------------------------------------------
# Two gloo processes
# ----------------------------------------------------------------------------------------------------


def _in_group(rank, world, init_file, fn, *args):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def run_ranks(fn, world, tmp_path, *args):
    """Run fn(rank, world, *args) in ``world`` forked processes joined in a gloo group."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # inherited by the forked ranks: W ranks x 1 thread on a shared machine
    try:
        mp.start_processes(_in_group, args=(world, str(tmp_path / "pg_init"), fn, *args), nprocs=world,
                           start_method="fork")
    finally:
        torch.set_num_threads(threads)


def _gather_check(rank, world, out):
    x = torch.arange(3 + rank, dtype=torch.float32)[:, None] + 100 * rank
    torch.save(gather_rows(x), f"{out}/{rank}.pt")


def test_gather_rows_concatenates_uneven_shares_in_rank_order(tmp_path):
    run_ranks(_gather_check, 2, tmp_path, str(tmp_path))
    want = torch.cat([torch.arange(3.0)[:, None], torch.arange(4.0)[:, None] + 100])
    for r in range(2):
        assert torch.equal(torch.load(tmp_path / f"{r}.pt"), want)


def _images(n=101):
    from ablate.data import build_dataset

    ds = build_dataset("digits", split="test")
    x = torch.stack([ds[i][0] for i in range(n)])
    return (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)


def _fid_rank(rank, world, out, metrics):
    imgs = _images()
    share = shard_range(len(imgs), rank, world)
    res = sharded_metrics(imgs[share.start : share.stop], "digits/test", metrics=metrics)
    if rank == 0:
        Path(out).write_text(json.dumps(res))
    else:
        assert res is None


@pytest.mark.parametrize("metrics", [("fid",), ("fid", "kid")])
def test_sharded_fid_equals_single_process_fid_on_the_same_samples(tmp_path, metrics):
    from ablate.metrics import compute_metrics

    out = tmp_path / "fid.json"
    run_ranks(_fid_rank, 2, tmp_path, str(out), metrics)
    got = json.loads(out.read_text())
    want = compute_metrics(_images(), "digits/test", metrics=metrics)
    assert got["num_fake"] == want["num_fake"] == 101 and got["extractor"] == want["extractor"]
    for k in ("fid", "kid_mean") if "kid" in metrics else ("fid",):
        assert got[k] == pytest.approx(want[k], rel=1e-6), k
    assert sharded_fid(_images(), "digits/test")["fid"] == pytest.approx(want["fid"], rel=1e-6)  # one process


def test_generate_shards_carry_the_single_process_seeds_and_labels():
    from ablate.pipeline.evaluation import generate
    from ablate.sampling import build_sampler
    from ablate.transport.interpolants import get_interpolant

    sampler = build_sampler("sde_em", interpolant=get_interpolant("linear"), prediction="velocity", steps=3)

    def model(x, t, y=None):  # velocity of N(0, I) data under the linear path: v = (t - (1-t)) x / norm
        t = t.reshape(-1, *[1] * (x.ndim - 1))
        return x * (2 * t - 1) / ((1 - t) ** 2 + t**2)

    kw = dict(batch_size=4, shape=(1, 4, 4), num_classes=10, seed=7, progress=False)
    full, yfull, _ = generate(model, sampler, num_samples=11, **kw)
    parts = [generate(model, sampler, num_samples=len(s), start=s.start, **kw) for s in
             (shard_range(11, r, 2) for r in range(2))]
    assert torch.equal(torch.cat([p[1] for p in parts]), yfull)
    torch.testing.assert_close(torch.cat([p[0] for p in parts]), full, rtol=1e-6, atol=1e-6)


def _evaluate_rank(rank, world, exp, training, ema, info, job_dir, out):
    from ablate.pipeline.evaluation import evaluate

    res = evaluate(exp, training, ema, info, job_dir=Path(job_dir) / f"rank{rank}")
    Path(out, f"rows{rank}.json").write_text(json.dumps(res["rows"], default=str))


def test_evaluate_run_sharded_over_two_ranks_gives_the_single_process_row(compose, tmp_path):
    from ablate.pipeline.build import build_experiment
    from ablate.pipeline.evaluation import evaluate
    from ablate.pipeline.train import train_or_reuse

    exp = build_experiment(compose(FAST + [f"out_dir={tmp_path}", "trainer.steps=2", "eval.num_samples=41",
                                           "eval.batch_size=8", "sampler=sde"]))
    training, ema, info = train_or_reuse(exp)
    (one,) = evaluate(exp, training, ema, info, job_dir=tmp_path / "single")["rows"]
    run_ranks(_evaluate_rank, 2, tmp_path, exp, training, ema, info, str(tmp_path), str(tmp_path))
    (two,) = json.loads((tmp_path / "rows0.json").read_text())
    assert json.loads((tmp_path / "rows1.json").read_text()) == []  # only rank 0 writes rows
    assert two["metric"] == one["metric"] == "eval/fid41/" + two["sampler_tag"]
    assert two["num_samples"] == 41 and two["nfe"] == one["nfe"]
    assert two["value"] == pytest.approx(one["value"], rel=1e-5)
    assert (tmp_path / "rank0" / "samples.png").exists() and not (tmp_path / "rank1").exists()
    df = read_results(tmp_path / "results.jsonl")
    assert len(read_results(tmp_path / "results.jsonl", latest=False)) == 2  # single-process and two-rank rows
    assert len(df) == 1  # the same point: the two-rank row supersedes the single-process one


class RecordSteps(Callback):
    """Writes the logged global loss of every step and, at the end, the net and EMA of each rank."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with open(self.out / f"loss_rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "loss": float(trainer.callback_metrics[TRAIN_LOSS]),
                                "local_batch": len(batch[0])}) + "\n")

    def on_train_end(self, trainer, pl_module):
        torch.save({"ema": pl_module.ema.state_dict(), "net": pl_module.net.state_dict()},
                   self.out / f"state_rank{trainer.global_rank}.pt")


def _train(compose, out_dir, rec_dir, overrides):
    from ablate.pipeline.build import build_experiment
    from ablate.pipeline.train import train_or_reuse

    rec_dir.mkdir(parents=True, exist_ok=True)
    exp = build_experiment(compose(FAST + [f"out_dir={out_dir}", *overrides]))
    _, ema, info = train_or_reuse(exp, callbacks=[RecordSteps(rec_dir)])
    losses = [json.loads(line) for line in (rec_dir / "loss_rank0.jsonl").read_text().splitlines()]
    return ema, info, losses


def _assert_close_states(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=RTOL, atol=1e-6, msg=k)


def test_two_process_ddp_follows_the_one_process_trajectory(compose, tmp_path, one_thread):
    ema1, info1, loss1 = _train(compose, tmp_path / "one", tmp_path / "rec1", ["trainer.steps=4"])
    ema2, info2, loss2 = _train(compose, tmp_path / "two", tmp_path / "rec2", ["trainer.steps=4",
                                                                               "trainer=ddp_cpu"])
    assert info1["train_steps"] == info2["train_steps"] == 4 and info2["images_seen"] == 4 * 32
    assert [r["local_batch"] for r in loss1] == [32] * 4 and [r["local_batch"] for r in loss2] == [16] * 4
    torch.testing.assert_close(torch.tensor([r["loss"] for r in loss2]), torch.tensor([r["loss"] for r in loss1]),
                               rtol=RTOL, atol=0)
    assert len({r["loss"] for r in loss1}) == 4  # the loss does move: the comparison is not vacuous
    _assert_close_states(ema2, ema1)  # what the main process gets back from the ranks
    r0, r1 = (torch.load(tmp_path / "rec2" / f"state_rank{r}.pt") for r in range(2))
    for k in r0["ema"]:  # the EMA is identical on both ranks, without any EMA communication
        assert torch.equal(r0["ema"][k], r1["ema"][k]), k
    _assert_close_states(r0["net"], torch.load(tmp_path / "rec1" / "state_rank0.pt")["net"])


@pytest.mark.parametrize("axes", [[], ["time=discrete", "prediction=noise", "interpolant=vp", "sampler=ddpm"]])
def test_module_and_data_pickle_for_ddp_spawn(compose, axes):
    import pickle

    from ablate.pipeline.build import build_experiment
    from ablate.pipeline.lit import DiTLitModule, StepData
    from ablate.pipeline.train import build_training

    exp = build_experiment(compose(FAST + axes))
    training = build_training(exp)
    module = pickle.loads(pickle.dumps(DiTLitModule(training.net, training.loss_fn)))
    data = StepData(exp.data.train_set(), 32, 0)
    assert len(pickle.loads(pickle.dumps(data)).dataset) == len(data.dataset)
    torch.manual_seed(0)
    a = training.loss_fn(training.net, *next(iter(_batches(data.dataset))))
    torch.manual_seed(0)
    b = module.loss_fn(module.net, *next(iter(_batches(data.dataset))))
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # the unpickled loss is the same function


def _batches(dataset, n=4):
    xs, ys = zip(*(dataset[i] for i in range(n)), strict=True)
    yield torch.stack([torch.as_tensor(x) for x in xs]), torch.as_tensor(ys)


def test_two_process_ddp_spawn_follows_the_one_process_trajectory(compose, tmp_path, one_thread):
    ema1, _, loss1 = _train(compose, tmp_path / "one", tmp_path / "rec1", ["trainer.steps=2"])
    ema2, info2, loss2 = _train(compose, tmp_path / "two", tmp_path / "rec2", [
        "trainer.steps=2", "trainer=ddp_cpu", "trainer.strategy=ddp_spawn"])
    assert info2["train_steps"] == 2 and [r["local_batch"] for r in loss2] == [16] * 2
    torch.testing.assert_close(torch.tensor([r["loss"] for r in loss2]), torch.tensor([r["loss"] for r in loss1]),
                               rtol=RTOL, atol=0)
    _assert_close_states(ema2, ema1)


def test_resume_on_a_different_number_of_processes_continues_the_trajectory(compose, tmp_path, capfd, one_thread):
    ref, _, _ = _train(compose, tmp_path / "ref", tmp_path / "rec_ref", ["trainer.steps=4"])
    _train(compose, tmp_path / "a", tmp_path / "rec_a", ["trainer.steps=2", "trainer.ckpt_every=1"])
    (last,) = (tmp_path / "a" / "checkpoints").glob("*/last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 2
    capfd.readouterr()
    ema, info, losses = _train(compose, tmp_path / "b", tmp_path / "rec_b",
                               ["trainer.steps=4", "trainer=ddp_cpu", f"ckpt_path={last}"])
    assert "data stream starts at step 2" in capfd.readouterr().out
    assert info["train_steps"] == 4 and [r["step"] for r in losses] == [3, 4]
    _assert_close_states(ema, ref)


def test_in_loop_evaluation_under_ddp_is_sharded_over_the_ranks(compose, tmp_path, monkeypatch, one_thread):
    """Every rank takes part in the in-loop evaluation (rank 0 alone would wait forever on the gathering)."""
    from ablate.pipeline.build import build_experiment
    from ablate.pipeline.train import train_or_reuse

    monkeypatch.chdir(tmp_path)  # the in-loop sample grids go to the job directory (here the cwd)
    exp = build_experiment(compose(FAST + [f"out_dir={tmp_path}", "trainer=ddp_cpu", "trainer.steps=2",
                                           "eval.every_n_steps=1", "eval.num_samples=21", "eval.batch_size=8"]))
    _, _, info = train_or_reuse(exp)
    rows = read_results(tmp_path / "results.jsonl")
    assert info["train_steps"] == 2 and rows["step"].tolist() == [1] and rows["num_samples"].tolist() == [21]
    assert (tmp_path / "samples_step0000001.png").exists()


# ----------------------------------------------------------------------------------------------------
# FSDP (trainer.strategy=fsdp): two torchrun processes (gloo) against one process
# ----------------------------------------------------------------------------------------------------

WORKER = Path(__file__).parent / "fsdp_worker.py"
TORCHRUN = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2"]


def _fsdp(tmp_path, name, overrides):
    """tests/fsdp_worker.py under torchrun: FSDP training over two ranks, then the sharded evaluation."""
    rec = tmp_path / f"rec_{name}"
    cmd = [*TORCHRUN, str(WORKER), str(tmp_path / name), str(rec), *FAST, "trainer.devices=2", *overrides]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    losses = [json.loads(line) for line in (rec / "loss_rank0.jsonl").read_text().splitlines()]
    shards = [json.loads((rec / f"shards_rank{k}.json").read_text()) for k in range(2)]
    return torch.load(rec / "result.pt", weights_only=False), losses, shards


def _last_ckpt(out_dir: Path) -> Path:
    (last,) = (out_dir / "checkpoints").glob("*/last.ckpt")
    return last


def test_fsdp_shards_net_and_ema_alike_and_follows_the_one_process_trajectory(compose, tmp_path, one_thread):
    from ablate.pipeline.build import build_experiment
    from ablate.pipeline.evaluation import evaluate
    from ablate.pipeline.train import train_or_reuse

    ev = ["eval.num_samples=41", "eval.batch_size=8", "trainer.steps=4"]
    (tmp_path / "rec1").mkdir()
    exp = build_experiment(compose(FAST + [f"out_dir={tmp_path / 'one'}", *ev]))
    training, ema1, _ = train_or_reuse(exp, callbacks=[RecordSteps(tmp_path / "rec1")])
    loss1 = [json.loads(line) for line in (tmp_path / "rec1" / "loss_rank0.jsonl").read_text().splitlines()]
    ref_row = evaluate(exp, training, ema1, {"train_steps": 4}, job_dir=tmp_path / "rec1")["rows"][0]

    res, loss2, shards = _fsdp(tmp_path, "fsdp", [*ev, "eval.every_n_steps=2"])
    assert res["info"]["train_steps"] == 4 and [r["local_batch"] for r in loss2] == [16] * 4
    torch.testing.assert_close(torch.tensor([r["loss"] for r in loss2]), torch.tensor([r["loss"] for r in loss1]),
                               rtol=RTOL, atol=0)
    _assert_close_states(res["ema"], ema1)  # the EMA gathered from the shards = the one-process EMA
    (final,) = (tmp_path / "fsdp" / "checkpoints").glob("*/final.pt")
    _assert_close_states(torch.load(final, weights_only=True)["net"], training.net.state_dict())
    # Really sharded: each rank holds half of the parameters, as flat 1-D slices, and the EMA's slices have
    # exactly the net's layout (what makes the shard-local EMA update correct).
    total = sum(p.numel() for p in training.net.parameters())
    assert [s["strategy"] for s in shards] == ["AblateFSDPStrategy"] * 2
    assert sum(s["net_numel"] for s in shards) == total and max(s["net_numel"] for s in shards) < 0.6 * total
    for s in shards:
        assert s["net_shapes"] == s["ema_shapes"] and all(len(shape) == 1 for shape in s["net_shapes"])
    # Evaluation on the gathered EMA: in the loop at step 2 (rank 0) and at the end (sharded over the ranks):
    # one row each, the final one the single-process FID on the same images.
    rows = read_results(tmp_path / "fsdp" / "results.jsonl")
    assert rows["step"].tolist() == [2, 4] and len(res["rows"]) == 1
    assert res["rows"][0]["value"] == pytest.approx(ref_row["value"], rel=1e-4)


def test_fsdp_checkpoints_resume_on_one_process_and_one_process_checkpoints_on_fsdp(compose, tmp_path, one_thread):
    ref, _, _ = _train(compose, tmp_path / "ref", tmp_path / "rec_ref", ["trainer.steps=4"])
    # FSDP for 2 steps, then one process to step 4.
    _fsdp(tmp_path, "fsdp2", ["trainer.steps=2", "trainer.ckpt_every=1"])
    last = _last_ckpt(tmp_path / "fsdp2")
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 2
    # A full checkpoint in the standard layout, with exp_avg and exp_avg_sq distinct (torch's CPU FSDP
    # aliases them when offloading to the CPU; ablate.scale.fsdp gathers them without offload there).
    states = ckpt["optimizer_states"][0]["state"]
    assert all(isinstance(k, int) for k in states)
    moved = [s for s in states.values() if s["exp_avg_sq"].any()]  # (all-zero states of unused rows are equal)
    assert moved and not any(torch.equal(s["exp_avg"], s["exp_avg_sq"]) for s in moved)
    ema, info, losses = _train(compose, tmp_path / "one", tmp_path / "rec_one", ["trainer.steps=4",
                                                                                  f"ckpt_path={last}"])
    assert info["train_steps"] == 4 and [r["step"] for r in losses] == [3, 4]
    _assert_close_states(ema, ref)
    # One process for 2 steps, then FSDP to step 4 (ZeRO-2 and activation checkpointing: the same trajectory).
    _train(compose, tmp_path / "a", tmp_path / "rec_a", ["trainer.steps=2", "trainer.ckpt_every=1"])
    res, losses, _ = _fsdp(tmp_path, "fsdp4", ["trainer.steps=4", f"ckpt_path={_last_ckpt(tmp_path / 'a')}",
                                               "trainer.fsdp.sharding=SHARD_GRAD_OP",
                                               "trainer.fsdp.activation_checkpointing=true"])
    assert res["info"]["train_steps"] == 4 and [r["step"] for r in losses] == [3, 4]
    _assert_close_states(res["ema"], ref)


def test_ddp_and_fsdp_over_several_devices_are_refused_inside_a_local_sweep(compose, monkeypatch):
    from ablate.pipeline.build import ConfigError, build_experiment
    from ablate.pipeline.jobs import check_launch

    def trainer(overrides):
        return build_experiment(compose(FAST + overrides)).trainer

    for strategy in ("ddp", "fsdp"):
        tr = trainer([f"trainer.strategy={strategy}", "trainer.devices=2"])
        with pytest.raises(ConfigError, match=f"strategy={strategy}.*relaunch the whole sweep.*ddp_spawn"):
            check_launch(tr, multirun=True)
        check_launch(tr, multirun=False)  # a single run: Lightning's re-execution is what creates the ranks
    check_launch(trainer(["trainer=ddp_cpu"]), multirun=True)  # ddp_fork: no re-execution
    check_launch(trainer(["trainer.strategy=ddp", "trainer.devices=1"]), multirun=True)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")  # ranks created by torchrun (srun alike): fine
    check_launch(trainer(["trainer.strategy=ddp", "trainer.devices=2"]), multirun=True)


def test_fsdp_options_are_validated():
    from types import SimpleNamespace

    from ablate.scale.fsdp import build_strategy

    tr = SimpleNamespace(strategy="fsdp", fsdp={"sharding": "ZERO9", "activation_checkpointing": False})
    with pytest.raises(ValueError, match="ZERO9.*FULL_SHARD, SHARD_GRAD_OP, HYBRID_SHARD, NO_SHARD"):
        build_strategy(tr)
    tr.fsdp["sharding"] = "shard_grad_op"
    assert type(build_strategy(tr)).__name__ == "AblateFSDPStrategy"
    assert build_strategy(SimpleNamespace(strategy="ddp", fsdp={})) == "ddp"


# ----------------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_two_point_sweep(tmp_path):
    cmd = [sys.executable, "-m", "ablate.run", "-m", "hydra/launcher=submitit_local_cpu", "sampler=ode,sde",
           f"out_dir={tmp_path}", "trainer.steps=2", *FAST]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=os.getcwd())
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Submitit 'local' sweep" in r.stdout + r.stderr
    df = read_results(tmp_path / "results.jsonl")
    assert len(df) == 2 and (df["status"] == "ok").all() and set(df["sampler"]) == {"ode", "sde"}
    assert df["train_key"].nunique() == 1 and sorted(df["reused_checkpoint"].tolist()) == [False, True]
    assert len(list((tmp_path / "multirun").glob("*/.submitit/*/*_result.pkl"))) == 2


FAKE_SLURM = Path(__file__).parent / "fake_slurm"  # sbatch / srun / sacct that run the jobs on this machine


def _slurm_sweep(out_dir: Path, overrides, **env):
    # No rendezvous variables from this process (in-process DDP tests set MASTER_PORT): like a fresh login
    # shell, each job then takes its port from its SLURM job id (concurrent jobs must not share one).
    clean = {k: v for k, v in os.environ.items()
             if k not in ("MASTER_PORT", "MASTER_ADDR", "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK")}
    env = dict(clean, PATH=f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}", FAKE_SLURM_STATE=str(out_dir / "slurm"),
               **env)
    cmd = [sys.executable, "-m", "ablate.run", "-m", "hydra/launcher=submitit_slurm_gpu", f"out_dir={out_dir}",
           "trainer.steps=2", "trainer.accelerator=cpu", "trainer.strategy=ddp", "hydra.launcher.cpus_per_task=1",
           "hydra.launcher.setup=['export OMP_NUM_THREADS=1']", *FAST, *overrides]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=os.getcwd())
    assert r.returncode == 0, r.stderr[-3000:]
    logs = "".join(p.read_text() for p in (out_dir / "multirun").glob("*/.submitit/*/*_log.*"))
    return (out_dir / "slurm" / "sbatch.log").read_text().splitlines(), read_results(out_dir / "results.jsonl"), logs


def test_job_dirname_keeps_short_names_and_cuts_long_ones_without_collisions():
    from ablate.pipeline.jobs import job_dirname

    assert job_dirname("sampler=ode,trainer.steps=2") == "sampler=ode,trainer.steps=2"
    assert job_dirname("data.root=/data/x.pt") == "data.root=_data_x.pt"
    a, b = job_dirname("k=" + "a" * 300), job_dirname("k=" + "a" * 299 + "b")
    assert len(a) == len(b) == 120 and a != b and a.startswith("k=aaa")


def test_submitit_slurm_launcher_one_job_per_point_with_srun_ranks_on_one_and_two_nodes(tmp_path):
    """The SLURM path without a cluster: tests/fake_slurm's sbatch/srun/sacct run the submitted jobs here with
    the SLURM_* variables of a real allocation. Checks the sbatch flags (nodes and GPUs from the trainer
    config, time and partition from the environment), one job per sweep point, DDP over the srun tasks (ranks
    from SLURM_PROCID, gloo), one row per job, the second job reusing the first one's checkpoint, and the
    single-process FID."""
    ref = subprocess.run([sys.executable, "-m", "ablate.run", f"out_dir={tmp_path / 'one'}", "trainer.steps=2",
                          "sampler=ode", *FAST], capture_output=True, text=True, timeout=900, cwd=os.getcwd())
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_fid = read_results(tmp_path / "one" / "results.jsonl")["value"].iloc[0]

    sbatch, rows, logs = _slurm_sweep(tmp_path / "sweep", ["sampler=ode,sde", "trainer.devices=2"],
                                      ABLATE_SLURM_PARTITION="debugq", ABLATE_SLURM_TIME_MIN="30")
    assert len(sbatch) == 1  # one array submission, one array task (= one SLURM job) per sweep point
    for flag in ("--array=0-1%2", "--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=2", "--partition=debugq",
                 "--time=30", "--signal=USR2@300"):
        assert flag in sbatch[0].split(), (flag, sbatch[0])
    assert logs.count("global_rank=0(2)") == 2 and logs.count("global_rank=1(2)") == 2  # 2 srun tasks per job
    assert len(rows) == 2 and (rows["status"] == "ok").all() and set(rows["sampler"]) == {"ode", "sde"}
    assert rows["train_key"].nunique() == 1 and sorted(rows["reused_checkpoint"].tolist()) == [False, True]
    assert rows.set_index("sampler").loc["ode", "value"] == pytest.approx(ref_fid, rel=1e-4)

    # Two nodes x one GPU: node ranks from SLURM_NODEID; a long override list still gets a valid job directory.
    sbatch, rows, logs = _slurm_sweep(tmp_path / "nodes", ["sampler=ode", "trainer.devices=1", "trainer.num_nodes=2",
                                                          "eval.inception_weights=/" + "x" * 200])
    assert "--nodes=2" in sbatch[0].split() and "--ntasks-per-node=1" in sbatch[0].split()
    assert "node=0(2), global_rank=0(2)" in logs and "node=1(2), global_rank=1(2)" in logs
    assert len(rows) == 1 and rows["value"].iloc[0] == pytest.approx(ref_fid, rel=1e-4)
    assert all(len(p.name) <= 122 for p in (tmp_path / "nodes" / "multirun").glob("*/*"))


# ----------------------------------------------------------------------------------------------------
# make gpu-check (the GPU path itself is unverified here: this machine has no GPU)
# ----------------------------------------------------------------------------------------------------


def _gpu_check():
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA exit")
def test_gpu_check_exits_with_a_clear_message_without_cuda(capsys):
    assert _gpu_check().main([]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


# ~11 s on an idle 2-core CPU (bf16 autocast on CPU is slow when the machine is contended)
def test_gpu_check_code_path_runs_on_cpu_and_its_peak_table_matches_names(capsys):
    gc = _gpu_check()
    assert gc.main(["--smoke-cpu"]) == 0
    out = capsys.readouterr().out
    assert "train step" in out and "sampler ode_heun" in out
    assert "smoke pipeline: eval/fid20/" in out  # the `ablate.run` pipeline part and its row parsing
    assert gc.bf16_peak_tflops("NVIDIA H100 80GB HBM3")[0] == 989.0
    assert gc.bf16_peak_tflops("NVIDIA H100 PCIe")[0] == 756.0
    assert gc.bf16_peak_tflops("NVIDIA A100-SXM4-80GB")[0] == 312.0
    assert gc.bf16_peak_tflops("Some GPU")[0] is None


def test_gpu_check_report_renders_every_row_error_and_pipeline():
    """The Markdown report is written on the GPU machine only: render a report of every kind of entry here."""
    row = dict(preset="DiT-B/2", part="train step", compile=True, batch=256, images_per_s=1000.0, tflops=400.0,
               mfu=0.4, gpu_util=99.0, peak_mem_gib=20.0, first_call_s=50.0)
    report = dict(gpu="NVIDIA H200", date="2026-11-30 00:00 UTC", torch="2.11", cuda="13.0", python="3.12",
                  bf16_peak_tflops=989.0, peak_source="datasheet (H200)", measured_bf16_matmul_tflops=800.0,
                  sdpa="flash: ok", wall_s=100.0,
                  rows=[row, dict(row, part="sampler ode_heun-nfe49-cfg1.0", gpu_util=None, first_call_s=None)],
                  errors=[dict(preset="DiT-XL/2", compile=True, error="RuntimeError: boom")],
                  pipelines=[dict(command="-m ablate.run trainer=gpu", returncode=0, steps_per_s=50.0, metric="m",
                                  fid=1.0, train_wall_s=6.0, sample_wall_s=1.0, wall_s=30.0),
                             dict(returncode=1, error="Traceback ... ValueError: bad")])
    md = _gpu_check().report_markdown(report)
    assert "| DiT-B/2 | train step | True | 256 | 1000.0 | 400.0 | 40.0% | 50.0% | 99% | 20.0 | 50.0 |" in md
    assert "| n/a |" in md and "FAILED DiT-XL/2 (compile=True): `RuntimeError: boom`" in md
    assert "50.0 steps/s, m = 1.00" in md and "FAILED: Traceback ... ValueError: bad" in md


# ----------------------------------------------------------------------------------------------------
# Processes created outside Lightning (torchrun here; srun on SLURM takes the same path)
# ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_processes_train_evaluate_and_reuse_like_one_process(tmp_path):
    common = [f"out_dir={tmp_path}/{{}}", *FAST, "trainer.steps=3", "eval.num_samples=41", "eval.batch_size=8"]
    ddp = ["trainer.strategy=ddp", "trainer.devices=2"]

    def go(launcher, name, extra):
        cmd = [*launcher, "-m", "ablate.run", *[c.format(name) for c in common], *extra]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=os.getcwd())
        assert r.returncode == 0, r.stderr[-3000:]

    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    go([sys.executable], "one", [])
    go(torchrun, "two", ddp)
    go(torchrun, "two", [*ddp, "sampler=sde"])  # a second job on the same training key: reuses, no deadlock
    one, two = read_results(tmp_path / "one" / "results.jsonl"), read_results(tmp_path / "two" / "results.jsonl")
    assert len(one) == 1 and len(two) == 2  # rank 0 alone writes rows
    assert two["train_key"].nunique() == 1 and two["train_key"].iloc[0] == one["train_key"].iloc[0]
    assert two["reused_checkpoint"].tolist() == [False, True]
    assert two["value"].iloc[0] == pytest.approx(one["value"].iloc[0], rel=1e-4)
    assert two["images_seen"].iloc[0] == one["images_seen"].iloc[0] == 3 * 32


@pytest.mark.slow
def test_trainer_compile_trains_the_same_weights_on_two_processes(compose, tmp_path, one_thread):
    """trainer.compile=true (torch.compile of the network's forward, in place) under DDP with the global-batch
    draws: the same trajectory as eager on one process, up to the compiled kernels' rounding."""
    ref, _, loss1 = _train(compose, tmp_path / "eager", tmp_path / "rec1", ["trainer.steps=2"])
    ema, _, loss2 = _train(compose, tmp_path / "compiled", tmp_path / "rec2",
                           ["trainer.steps=2", "trainer=ddp_cpu", "trainer.compile=true"])
    torch.testing.assert_close(torch.tensor([r["loss"] for r in loss2]), torch.tensor([r["loss"] for r in loss1]),
                               rtol=1e-4, atol=0)
    assert ema.keys() == ref.keys()  # no `_orig_mod.` prefixes: checkpoints stay interchangeable
    for k in ref:
        torch.testing.assert_close(ema[k], ref[k], rtol=1e-4, atol=1e-5, msg=k)


def test_is_global_zero_reads_the_launcher_rank_before_a_process_group_exists(monkeypatch):
    from ablate.scale.distributed import is_global_zero

    for var in ("RANK", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    assert is_global_zero()
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert not is_global_zero()  # an srun task other than 0: a config error is reported by task 0 only
    monkeypatch.setenv("RANK", "0")
    assert is_global_zero()  # torchrun's RANK first


def test_fsdp_config_errors_are_caught_before_any_work(compose):
    from ablate.pipeline.build import ConfigError, build_experiment

    with pytest.raises(ConfigError, match="trainer.fsdp.sharding='ZERO9'.*FULL_SHARD"):
        build_experiment(compose(FAST + ["trainer.strategy=fsdp", "trainer.fsdp.sharding=zero9"]))
    with pytest.raises(ConfigError, match="trainer.compile=true with trainer.strategy=fsdp"):
        build_experiment(compose(FAST + ["trainer.strategy=fsdp", "trainer.compile=true"]))
    build_experiment(compose(FAST + ["trainer.strategy=fsdp", "trainer.fsdp.sharding=hybrid_shard"]))
