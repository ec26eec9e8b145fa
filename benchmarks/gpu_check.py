"""``make gpu-check``: the GPU fast path in under 5 minutes on one GPU, with its throughput and utilisation.

For each DiT preset (default DiT-B/2 and DiT-XL/2 on 256-px latents, 32 x 32 x 4, 1000 classes) it times

- the **training step** of the SiT objective (linear path, velocity, AdamW, EMA) under bf16-mixed autocast
  with TF32 matmuls, eager and (``--compile``) ``torch.compile``-d;
- the **sampler**: Heun probability-flow ODE (``ode_heun``, 50 NFE) from the same network in bf16,

and prints images/s, achieved TFLOP/s, MFU against the GPU's dense bf16 peak (from a small table of datasheet
numbers, else a measured bf16 matmul peak), peak memory and the GPU utilisation sampled during the timed loop
(``torch.cuda.utilization`` through NVML, else ``nvidia-smi``). FLOPs follow the repository's accounting
(``ablate.metrics.flops``): the papers' "Gflops" are multiply-accumulates, so one forward costs
2 x model_gflops x 1e9 FLOPs per image, a training step 3 x that (forward + backward), a sample NFE x that.

It also checks that SDPA runs its flash kernel at the DiT attention shape in bf16 (head dim 64), and runs the
real pipeline once (``--pipeline-steps``, default 300): ``python -m ablate.run trainer=gpu`` (Lightning,
bf16-mixed, TF32, the in-place ``torch.compile`` with ``--compile``) on the embedded digits, training, sampling
and FID, and reports its steps/s, wall time and FID (a failure there is reported, not fatal). The run stops
adding work once ``--budget-s`` (default 240 s) is spent. Results: ``benchmarks/results/gpu_check.{json,md}``.
Without CUDA it exits at once with status 2 and says so.

Usage::

    python benchmarks/gpu_check.py                       # B/2 + XL/2, batch 256 (halved on OOM), eager
    python benchmarks/gpu_check.py --compile --presets DiT-B/2
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from NVIDIA datasheets, matched on the device name.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0,
                    "H100 NVL": 835.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


MFU_TARGET = 0.40  # the training step's target share of the dense bf16 peak


def bf16_peak_tflops(name: str) -> tuple[float | None, str]:
    for key, tf in BF16_PEAK_TFLOPS.items():  # the first (most specific) match wins
        if key in name:
            return tf, f"datasheet ({key})"
    return None, "unknown GPU: MFU against the measured bf16 matmul peak"


def measured_matmul_tflops(n: int = 8192, reps: int = 10) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


class UtilSampler:
    """Samples GPU utilisation (%) every ``period`` s in a thread while active (NVML, else nvidia-smi)."""

    def __init__(self, period: float = 0.2):
        self.period, self.samples, self._stop = period, [], threading.Event()
        self.source = "none"
        try:
            torch.cuda.utilization()
            self.source = "nvml"
        except Exception:
            if shutil.which("nvidia-smi"):
                self.source = "nvidia-smi"

    def _read(self) -> float | None:
        if self.source == "nvml":
            return float(torch.cuda.utilization())
        if self.source == "nvidia-smi":
            idx = torch.cuda.current_device()
            out = subprocess.run(["nvidia-smi", "-i", str(idx), "--query-gpu=utilization.gpu",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
            return float(out.stdout.strip().splitlines()[0])
        return None

    def _loop(self):
        while not self._stop.wait(self.period):
            try:
                v = self._read()
            except Exception:
                v = None
            if v is not None:
                self.samples.append(v)

    def __enter__(self):
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def check_flash_sdpa(heads: int = 12, tokens: int = 256, head_dim: int = 64) -> str:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(8, heads, tokens, head_dim, device="cuda", dtype=torch.bfloat16)
    res = []
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
            res.append(f"{name}: ok")
        except RuntimeError as e:
            res.append(f"{name}: unavailable ({str(e).splitlines()[0][:80]})")
    return "; ".join(res)


def _sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, warmup: int, iters: int, device: str = "cuda"):
    for _ in range(warmup):
        fn()
    _sync(device)
    if device != "cuda":
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t0) / iters, None, "none"
    with UtilSampler() as util:
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        _sync(device)
        dt = time.perf_counter() - t0
    return dt / iters, util.mean, util.source


def bench_preset(preset: str, args, peak_tflops: float, device: str = "cuda", batch: int | None = None,
                 compile: bool = False) -> list[dict]:
    """Time the training step and the sampler of ``preset`` (``compile``: both through ``torch.compile``);
    ``device="cpu"`` is the smoke test's path (same code, no GPU figures)."""
    from ablate.metrics.flops import model_gflops
    from ablate.models import build_model
    from ablate.sampling import build_sampler
    from ablate.transport.interpolants import get_interpolant
    from ablate.transport.loss import build_objective

    torch.manual_seed(0)
    net = build_model(preset).to(device)
    ema = build_model(preset).to(device).requires_grad_(False).eval()
    mem = torch.cuda if device == "cuda" else None
    gmacs = model_gflops(net)
    c = net.in_channels
    objective = build_objective("linear", "velocity")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0, fused=device == "cuda")
    fwd = torch.compile(net) if compile else net
    B = batch or args.batch
    x = torch.randn(B, c, net.input_size, net.input_size, device=device)
    y = torch.randint(0, net.num_classes, (B,), device=device)

    def train_step():
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = objective.loss(lambda xt, t, yy: fwd(xt, t, yy)[:, :c], x, y)["loss"].mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1e-4)

    rows = []
    if mem:
        mem.reset_peak_memory_stats()
    t_compile = time.perf_counter()
    train_step()  # first step: allocation (and compilation) outside the timing
    _sync(device)
    first = time.perf_counter() - t_compile
    s, util, src = timed(train_step, args.warmup, args.iters, device)
    tflops = 3 * 2 * gmacs * 1e9 * B / s / 1e12
    rows.append(dict(preset=preset, part="train step", compile=compile, batch=B, seconds=s,
                     images_per_s=B / s, tflops=tflops, mfu=tflops / peak_tflops, gpu_util=util, util_source=src,
                     peak_mem_gib=mem.max_memory_allocated() / 2**30 if mem else None, first_call_s=first,
                     model_gmacs=gmacs))

    sampler = build_sampler("ode_heun", interpolant=get_interpolant("linear"), prediction="velocity",
                            steps=args.sample_steps)
    efwd = torch.compile(ema) if compile else ema

    def model(xt, t, yy=None):
        with torch.autocast(device, dtype=torch.bfloat16):
            return efwd(xt, t, yy)[:, :c].float()

    nfe = []

    def sample():
        with torch.inference_mode():
            nfe.append(sampler(model, torch.randn_like(x), y).nfe)

    if mem:
        mem.reset_peak_memory_stats()
    s, util, src = timed(sample, 1, args.sample_iters, device)
    n = statistics.fmean(nfe)
    tflops = n * 2 * gmacs * 1e9 * B / s / 1e12
    rows.append(dict(preset=preset, part=f"sampler {sampler.tag}", compile=compile, batch=B, seconds=s,
                     images_per_s=B / s, tflops=tflops, mfu=tflops / peak_tflops, gpu_util=util, util_source=src,
                     peak_mem_gib=mem.max_memory_allocated() / 2**30 if mem else None, nfe=n,
                     model_gmacs=gmacs))
    if mem:
        mem.empty_cache()
    return rows


def run_pipeline(args, out_dir: Path, trainer: str = "gpu", extra: tuple[str, ...] = (), compile: bool = False) -> dict:
    """``python -m ablate.run trainer=gpu`` for ``args.pipeline_steps`` steps on the embedded default, in a
    subprocess; its row (FID, walls) or its error."""
    from ablate.results import read_results

    cmd = [sys.executable, "-m", "ablate.run", f"trainer={trainer}", f"trainer.steps={args.pipeline_steps}",
           f"trainer.compile={str(compile).lower()}", "logger=none", f"out_dir={out_dir}",
           f"hydra.run.dir={out_dir}/job", "reuse=false", *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.pipeline_timeout_s)
    wall = time.perf_counter() - t0
    res = dict(command=" ".join(cmd[1:]), compile=compile, returncode=r.returncode, wall_s=wall)
    if r.returncode != 0:
        res["error"] = (r.stderr or r.stdout)[-1500:]
        return res
    row = read_results(out_dir / "results.jsonl").iloc[-1]
    res.update(fid=float(row["value"]), metric=row["metric"], train_wall_s=float(row["train_wall_s"]),
               sample_wall_s=float(row["sample_wall_s"]), steps_per_s=args.pipeline_steps / float(row["train_wall_s"]))
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["DiT-B/2", "DiT-XL/2"], help="timed eagerly")
    p.add_argument("--compile-presets", nargs="*", default=["DiT-B/2"],
                   help="also timed through torch.compile, after the eager ones (none: skip compile)")
    p.add_argument("--compile", action="store_true", help="time every preset through torch.compile only")
    p.add_argument("--batch", type=int, default=256, help="images per step (one GPU)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--sample-steps", type=int, default=25, help="Heun steps (2 NFE each, the last one 1)")
    p.add_argument("--sample-iters", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=240.0, help="stop adding timed parts after this many seconds")
    p.add_argument("--pipeline-steps", type=int, default=300,
                   help="training steps of the `ablate.run trainer=gpu` pipeline runs (0: skip them)")
    p.add_argument("--pipeline-modes", nargs="*", default=["eager", "compile"], choices=["eager", "compile"],
                   help="the pipeline run eagerly and/or with trainer.compile=true")
    p.add_argument("--pipeline-timeout-s", type=float, default=180.0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--smoke-cpu", action="store_true",
                   help="run the same code on the CPU with tiny-8 (a test of this script, no GPU figures)")
    p.add_argument("--render", type=Path, default=None, metavar="FOLDER",
                   help="only rebuild FOLDER/gpu_check.md from FOLDER/gpu_check.json (+ sweep_results.jsonl)")
    args = p.parse_args(argv)

    if args.render is not None:
        print(render(args.render))
        return 0
    if args.smoke_cpu:
        args.batch, args.warmup, args.iters, args.sample_steps, args.sample_iters = 4, 1, 1, 2, 1
        for r in bench_preset("tiny-8", args, peak_tflops=float("nan"), device="cpu"):
            print(f"  smoke {r['preset']} {r['part']}: {r['images_per_s']:.1f} img/s (CPU, bf16 autocast)")
        import tempfile

        args.pipeline_steps = 2
        with tempfile.TemporaryDirectory() as tmp:
            pipe = run_pipeline(args, Path(tmp), trainer="cpu", extra=(
                "model.depth=1", "model.hidden_size=32", "model.num_heads=2", "eval.num_samples=20",
                "eval.batch_size=20", "sampler.steps=2"))
        if pipe["returncode"] != 0:
            print(f"  smoke pipeline FAILED: {pipe.get('error')}", file=sys.stderr)
            return 1
        print(f"  smoke pipeline: {pipe['metric']} = {pipe['fid']:.1f}, {pipe['steps_per_s']:.1f} steps/s (CPU)")
        return 0

    if not torch.cuda.is_available():
        print("gpu-check: CUDA is not available (torch.cuda.is_available() is False): this check needs an NVIDIA "
              "GPU with a CUDA build of torch; nothing was measured.", file=sys.stderr)
        return 2
    start = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for the fp32 matmuls left outside autocast
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    name = torch.cuda.get_device_name()
    peak, peak_src = bf16_peak_tflops(name)
    measured = measured_matmul_tflops()
    if peak is None:
        peak = measured
    info = dict(gpu=name, torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version(),
                bf16_peak_tflops=peak, peak_source=peak_src, measured_bf16_matmul_tflops=measured,
                sdpa=check_flash_sdpa(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(f"gpu-check on {name} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    print(f"  bf16 peak {peak:.0f} TFLOP/s [{peak_src}]; measured 8192^3 bf16 matmul {measured:.0f} TFLOP/s")
    print(f"  SDPA bf16 at DiT shape: {info['sdpa']}")
    rows, errors = [], []
    plan = [(pr, args.compile) for pr in args.presets]
    if not args.compile:
        plan += [(pr, True) for pr in args.compile_presets or ()]
    for preset, compiled in plan:
        if time.perf_counter() - start > args.budget_s:
            print(f"  budget of {args.budget_s:.0f} s spent: skipping {preset} (compile={compiled})")
            continue
        batch = args.batch
        try:
            while True:  # halve the batch until the step fits the GPU's memory
                try:
                    rows += bench_preset(preset, args, peak, batch=batch, compile=compiled)
                    break
                except torch.cuda.OutOfMemoryError:
                    if batch <= 8:
                        raise
                gc.collect()  # outside the except block: the traceback no longer holds the failed step's tensors
                torch.cuda.empty_cache()
                print(f"  {preset}: out of memory at batch {batch}, retrying at {batch // 2}")
                batch //= 2
        except Exception as e:  # one failing part (e.g. compile) is reported; the other figures stand
            errors.append(dict(preset=preset, compile=compiled, error=f"{type(e).__name__}: {e}"[:1500]))
            print(f"  {preset} (compile={compiled}) FAILED: {errors[-1]['error'][:600]}")
            torch._dynamo.reset() if compiled else None
            continue
        for r in rows[-2:]:
            util = f"{r['gpu_util']:.0f}% ({r['util_source']})" if r["gpu_util"] is not None else "n/a"
            extra = f"  first call {r['first_call_s']:.1f} s" if "first_call_s" in r else ""
            print(f"  {r['preset']:9s} {r['part']:32s} compile={r['compile']!s:5s} b{r['batch']} "
                  f"{r['images_per_s']:9.1f} img/s {r['tflops']:6.1f} TFLOP/s  MFU {100 * r['mfu']:5.1f}%  "
                  f"util {util}  mem {r['peak_mem_gib']:.1f} GiB{extra}")
    pipelines = []
    for mode in args.pipeline_modes if args.pipeline_steps > 0 else ():
        import tempfile

        print(f"  pipeline: python -m ablate.run trainer=gpu trainer.steps={args.pipeline_steps} "
              f"trainer.compile={mode == 'compile'} (embedded digits)")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                pipe = run_pipeline(args, Path(tmp), compile=mode == "compile")
            except Exception as e:  # a timeout or an unreadable row: reported, the other figures stand
                pipe = dict(compile=mode == "compile", returncode=None, error=f"{type(e).__name__}: {e}")
        pipelines.append(pipe)
        if pipe.get("returncode") == 0:
            print(f"  pipeline ok: {pipe['steps_per_s']:.1f} steps/s, {pipe['metric']} = "
                  f"{pipe['fid']:.2f}, wall {pipe['wall_s']:.0f} s")
        else:
            print(f"  pipeline FAILED (rc {pipe.get('returncode')}): {pipe.get('error', '')[-600:]}")
    total = time.perf_counter() - start
    print(f"gpu-check done in {total:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    report = dict(info, wall_s=total, rows=rows, errors=errors, pipelines=pipelines)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / "gpu_check.md").write_text(report_markdown(report))
    return 0


def report_markdown(report: dict) -> str:
    """``gpu_check.md`` from the JSON report (every figure measured in the one run it describes)."""
    lines = [f"# gpu-check: {report['gpu']}, {report['date']}", "",
             f"torch {report['torch']}, CUDA {report['cuda']}, Python {report['python']}; bf16 peak "
             f"{report['bf16_peak_tflops']:.0f} TFLOP/s ({report['peak_source']}), measured 8192^3 bf16 matmul "
             f"{report['measured_bf16_matmul_tflops']:.0f} TFLOP/s; SDPA: {report['sdpa']}; wall "
             f"{report['wall_s']:.0f} s" + (f"; ablate {report['ablate_commit']}" if report.get("ablate_commit")
                                            else "") + ".", "",
             "MFU is achieved FLOP/s over the dense bf16 peak (FLOPs = 2 x multiply-accumulates; a training step "
             "is 3 forward passes, a sample NFE forward passes). `vs matmul` is the same FLOP/s over the "
             "measured matmul rate.", "",
             "| preset | part | compile | batch | img/s | TFLOP/s | MFU | vs matmul | GPU util | peak mem GiB | "
             "first call s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        util = f"{r['gpu_util']:.0f}%" if r["gpu_util"] is not None else "n/a"
        first = f"{r['first_call_s']:.1f}" if r.get("first_call_s") is not None else ""
        lines.append(f"| {r['preset']} | {r['part']} | {r['compile']} | {r['batch']} | {r['images_per_s']:.1f} | "
                     f"{r['tflops']:.1f} | {100 * r['mfu']:.1f}% | "
                     f"{100 * r['tflops'] / report['measured_bf16_matmul_tflops']:.1f}% | {util} | "
                     f"{r['peak_mem_gib']:.1f} | {first} |")
    target = report.get("mfu_target", MFU_TARGET)
    steps = [r for r in report["rows"] if r["part"] == "train step"]
    lines += [""] if steps else []
    for r in steps:
        verdict = "reached" if r["mfu"] >= target else "not reached"
        lines.append(f"- {r['preset']} training step, compile={r['compile']}: MFU {100 * r['mfu']:.1f}% against "
                     f"the {100 * target:.0f}% target: {verdict}.")
    for e in report.get("errors", []):
        lines += ["", f"FAILED {e['preset']} (compile={e['compile']}): `{e['error'][:300]}`"]
    for pipe in report.get("pipelines", []):
        what = f"`{_public_command(pipe.get('command', 'ablate.run trainer=gpu'))}`"
        lines += ["", f"Pipeline {what}: " + (
            f"{pipe['steps_per_s']:.1f} steps/s, {pipe['metric']} = {pipe['fid']:.2f}, train "
            f"{pipe['train_wall_s']:.1f} s, sampling {pipe['sample_wall_s']:.1f} s, wall {pipe['wall_s']:.0f} s "
            "(process start included)." if pipe.get("returncode") == 0 else
            f"FAILED: {pipe.get('error', '')[-300:]}")]
    if report.get("sweep"):
        lines += ["", sweep_markdown(report["sweep"])]
    return "\n".join(lines) + "\n"


def _public_command(cmd: str) -> str:
    """A command line without the run's temporary folders (out_dir=..., hydra.run.dir=...)."""
    return " ".join(w for w in cmd.split() if not w.startswith(("out_dir=", "hydra.run.dir=")))


def sweep_markdown(rows: list[dict]) -> str:
    """The 2 x 2 sweep's rows (``results.jsonl`` of ``-m interpolant=vp,linear sampler=ode,sde trainer=gpu``)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    keys = {r.get("train_key") for r in ok}
    trained = sorted({r.get("train_key") for r in ok if not r.get("reused_checkpoint")})
    lines = ["## The 2 x 2 sweep on the GPU", "",
             "`python -m ablate.run -m interpolant=vp,linear sampler=ode,sde trainer=gpu logger=none` (the CPU "
             f"default's budget: {ok[0]['train_steps'] if ok else '?'} steps at batch "
             f"{ok[0]['batch_size'] if ok else '?'}, {ok[0]['num_samples'] if ok else '?'} samples, bf16-mixed): "
             f"{len(ok)} rows from {len(trained)} trainings ({len(keys)} training keys; the SDE points reuse the "
             "ODE points' checkpoints).", "",
             "| interpolant | sampler | FID | NFE | reused checkpoint | train s (checkpoint's) | sampling s |",
             "|---|---|---|---|---|---|---|"]
    for r in ok:
        train = f"{r['train_wall_s']:.1f}" if r.get("train_wall_s") is not None else ""
        lines.append(f"| {r['interpolant']} | {r['sampler_tag']} | {r['value']:.3f} | {r['nfe']:g} | "
                     f"{r['reused_checkpoint']} | {train} | {r['sample_wall_s']:.2f} |")
    return "\n".join(lines)


def render(folder: Path) -> str:
    """Rebuild ``gpu_check.md`` from the files a GPU session collected in ``folder`` (``gpu_check.json``, and
    ``sweep_results.jsonl`` when present); returns the Markdown and writes it."""
    report = json.loads((folder / "gpu_check.json").read_text())
    sweep = next((f for f in (folder / "sweep_results.jsonl", folder / "gpu_sweep.jsonl") if f.exists()), None)
    if sweep is not None:
        report["sweep"] = [json.loads(line) for line in sweep.read_text().splitlines() if line.strip()]
    md = report_markdown(report)
    (folder / "gpu_check.md").write_text(md)
    return md


if __name__ == "__main__":
    sys.exit(main())
