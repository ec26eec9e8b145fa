"""Training-throughput benchmark: images/s and model FLOPs utilisation (MFU) of a full DiT training step.

One step = forward, DDPM noise-prediction loss, backward, AdamW, EMA update. MFU is

    MFU = 3 x (2 x forward MACs per image) x images/s / peak FLOP/s,

where the forward MACs come from ``ablate.metrics.flops.model_gflops`` (FlopCounterMode) and the peak is the
fp32 matmul rate measured *in the same run, interleaved with the model timings* (before and after every
repeat), so a machine shared with other jobs slows both alike. Contention is detected (the peak measured next
to a repeat falls below the best peak of the run, or the 1-minute load average exceeds the thread count) and
reported per repeat instead of being averaged away. The bf16 matmul peak is reported as well.

Variants (``--variants``): ``fast`` is ``ablate.models`` as shipped with a fused AdamW and a
``_foreach_lerp_`` EMA; ``baseline`` replays the official DiT code paths (patch conv whose transposed output
layout propagates through the network, q/k/v by indexing, ``foreach`` AdamW, a per-parameter EMA loop), for
an in-run comparison.

Allocator (``--allocator``, one per process): ``default`` is what ``python -m ablate.run`` does at start-up
(:func:`ablate.pipeline.jobs.tune_allocator`: glibc ``mallopt`` keeps freed memory in the heap), ``glibc`` leaves
glibc's defaults, ``tcmalloc`` re-executes the script with ``libtcmalloc_minimal.so.4`` preloaded (``make
tcmalloc`` installs it). On GPU: bf16-mixed autocast mode, SDPA picks flash / memory-efficient kernels,
``--compile`` wraps the model in ``torch.compile``; the first step (allocation, compilation) is timed apart.

Usage::

    python benchmarks/train_step.py --quick                 # tiny-8 (b128) and DiT-S/2 32x32x4, fp32 + bf16
    python benchmarks/train_step.py --presets tiny-8 --modes fp32 --repeats 9 --variants fast baseline
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (benchmarks/common.py)

from ablate.metrics.flops import model_gflops  # noqa: E402
from ablate.models import build_model  # noqa: E402
from ablate.models import dit as dit_module  # noqa: E402

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
DEFAULT_BATCH = {"tiny-8": 128, "tiny-28": 64, "tiny-32": 64, "DiT-S/2": 16}


# ----------------------------------------------------------------------------------------------------------
# Peak matmul rate and contention
# ----------------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCK = time.perf_counter  # --clock cpu: time.process_time (with --threads 1: immune to other processes)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int = 3) -> float:
    """Best-of-``reps`` rate of an n x n x n matmul, in FLOP/s (2 n^3 per product), on this script's clock."""
    return common.matmul_peak(device, dtype, n, reps, clock=CLOCK)


# ----------------------------------------------------------------------------------------------------------
# The training step
# ----------------------------------------------------------------------------------------------------------


def _baseline_patches():
    """Swap in the official code paths (for the in-run comparison); returns an undo function."""
    pe_fwd, attn_fwd = dit_module.PatchEmbed.forward, dit_module.Attention.forward

    def patch_conv(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)

    def attn_index(self, x):
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(B, T, D))

    dit_module.PatchEmbed.forward, dit_module.Attention.forward = patch_conv, attn_index

    def undo():
        dit_module.PatchEmbed.forward, dit_module.Attention.forward = pe_fwd, attn_fwd

    return undo


class TrainStep:
    """DDPM noise-prediction training step (linear betas 1e-4..0.02, T = 1000) with AdamW and EMA."""

    def __init__(self, preset, batch, device, mode, variant, compile_model, **overrides):
        self.device, self.mode, self.variant = device, mode, variant
        torch.manual_seed(0)
        self.model = build_model(preset, **overrides).to(device).train()
        self.gmacs = model_gflops(self.model)
        m = self.model
        self.params = [p for p in m.parameters() if p.requires_grad]
        self.ema = [p.detach().clone() for p in self.params]
        fast = variant == "fast"
        opt_kw = dict(fused=True) if fast else dict(foreach=True)
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.0, **opt_kw)
        self.net = torch.compile(m) if compile_model else m
        C, S = m.in_channels, m.input_size
        self.x0 = torch.randn(batch, C, S, S, device=device)
        self.y = torch.randint(0, max(m.num_classes, 1), (batch,), device=device) if m.num_classes else None
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        self.abar = torch.cumprod(1 - betas, 0).float().to(device)
        self.batch = batch

    def __call__(self) -> None:
        m, B = self.model, self.batch
        t = torch.randint(0, 1000, (B,), device=self.device)
        eps = torch.randn_like(self.x0)
        ab = self.abar[t].view(B, 1, 1, 1)
        x_t = ab.sqrt() * self.x0 + (1 - ab).sqrt() * eps
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mode == "bf16"):
            out = self.net(x_t, t, self.y)
        loss = F.mse_loss(out[:, : m.in_channels].float(), eps)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            if self.variant == "fast":
                torch._foreach_lerp_(self.ema, self.params, 1e-4)  # ema += (1 - 0.9999) (p - ema)
            else:
                for e, p in zip(self.ema, self.params, strict=True):
                    e.mul_(0.9999).add_(p, alpha=1e-4)


# ----------------------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------------------


def bench_one(args, preset, mode, variant, device, peak_n, attention="sdpa"):
    undo = _baseline_patches() if variant == "baseline" else (lambda: None)
    try:
        return _bench_one(args, preset, mode, variant, device, peak_n, attention)
    finally:
        undo()


def _bench_one(args, preset, mode, variant, device, peak_n, attention):
    with common.attention_backend(attention):
        batch = args.batch or (256 if device.type == "cuda" else DEFAULT_BATCH.get(preset, 16))
        overrides = dict(input_size=32, in_channels=4) if preset.startswith("DiT-") else {}
        step = TrainStep(preset, batch, device, mode, variant, args.compile, **overrides)
        t_first = time.perf_counter()
        step()  # the first step: allocations and (with --compile) the compilation, timed apart
        _sync(device)
        first_s = time.perf_counter() - t_first
        for _ in range(max(0, args.warmup - 1)):
            step()
        _sync(device)
        rows = []
        for r in range(args.repeats):
            before = matmul_peak(device, torch.float32, peak_n)
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            t0 = CLOCK()
            for _ in range(args.steps):
                step()
            _sync(device)
            dt = (CLOCK() - t0) / args.steps
            after = matmul_peak(device, torch.float32, peak_n)
            rows.append(
                dict(
                    repeat=r,
                    step_s=dt,
                    images_per_s=batch / dt,
                    peak_before=before,
                    peak_after=after,
                    loadavg_1m=load,
                )
            )
        return dict(
            preset=preset,
            mode=mode,
            variant=variant,
            batch=batch,
            gmacs_per_image=step.gmacs,
            compile=args.compile,
            attention=attention,
            allocator=args.allocator,
            first_step_s=first_s,
            repeats=rows,
        )


def profile_one(args, preset, mode, variant, device, steps: int = 2) -> str:
    """torch.profiler table (self time per operator, top 20) of ``steps`` training steps."""
    from torch.profiler import ProfilerActivity, profile

    undo = _baseline_patches() if variant == "baseline" else (lambda: None)
    try:
        batch = args.batch or (256 if device.type == "cuda" else DEFAULT_BATCH.get(preset, 16))
        overrides = dict(input_size=32, in_channels=4) if preset.startswith("DiT-") else {}
        step = TrainStep(preset, batch, device, mode, variant, args.compile, **overrides)
        step()
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(steps):
                step()
            _sync(device)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=20, max_name_column_width=60)
        return f"## {preset} {mode} {variant} (batch {batch}, {steps} steps)\n\n```\n{table}\n```\n"
    finally:
        undo()


def summarise(res: dict, peak32: float, peak16: float, threads: int) -> dict:
    flops_per_image = 3 * 2 * res["gmacs_per_image"] * 1e9
    ips = [r["images_per_s"] for r in res["repeats"]]
    mfu = [flops_per_image * x / peak32 for x in ips]
    # MFU against the peak measured right next to each repeat (robust to slow drifts in contention).
    mfu_local = [
        flops_per_image * r["images_per_s"] / statistics.mean([r["peak_before"], r["peak_after"]])
        for r in res["repeats"]
    ]
    contended = [
        r["repeat"]
        for r in res["repeats"]
        if min(r["peak_before"], r["peak_after"]) < 0.85 * peak32 or r["loadavg_1m"] > threads + 0.5
    ]
    out = dict(
        images_per_s=dict(min=min(ips), median=statistics.median(ips), max=max(ips)),
        mfu_fp32_peak=dict(min=min(mfu), median=statistics.median(mfu), max=max(mfu)),
        mfu_local_peak_median=statistics.median(mfu_local),
        contended_repeats=contended,
    )
    if res["mode"] == "bf16":
        out["mfu_bf16_peak_median"] = flops_per_image * statistics.median(ips) / peak16
    return out


def write_markdown(path: Path, report: dict) -> None:
    info = report["machine"]
    lines = [
        "# Training-step throughput",
        "",
        f"`{report['command']}`",
        "",
        f"- machine: {info['cpu']} ({info['cpu_count']} cpus, torch threads {info['torch_threads']}), "
        f"{info.get('gpu', 'no GPU')}; torch {info['torch']}, python {info['python']}; "
        f"LD_PRELOAD={info['ld_preload'] or '(none)'}",
        f"- clock: {report['clock']} time",
        f"- fp32 matmul peak (best in run, n={report['peak_n']}): {report['peak_fp32'] / 1e9:.1f} GFLOP/s; "
        f"bf16: {report['peak_bf16'] / 1e9:.1f} GFLOP/s",
        f"- fp32 peaks measured next to the repeats: min {report['peak_fp32_min'] / 1e9:.1f}, "
        f"max {report['peak_fp32'] / 1e9:.1f} GFLOP/s; load average at start {report['loadavg_start']:.2f}",
        "",
        "| preset | batch | mode | variant | GMACs/img | img/s min / med / max "
        "| MFU (fp32 peak) min / med / max | MFU vs adjacent peak | MFU bf16 peak | contended repeats |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        s, i, m = r["summary"], r["summary"]["images_per_s"], r["summary"]["mfu_fp32_peak"]
        bf = s.get("mfu_bf16_peak_median")
        lines.append(
            f"| {r['preset']} | {r['batch']} | {r['mode']}{'+compile' if r['compile'] else ''} "
            f"| {r['variant']}{'' if r.get('attention', 'sdpa') == 'sdpa' else ' (math attention)'} "
            f"| {r['gmacs_per_image']:.4f} | {i['min']:.1f} / {i['median']:.1f} / {i['max']:.1f} "
            f"| {100 * m['min']:.1f}% / {100 * m['median']:.1f}% / {100 * m['max']:.1f}% "
            f"| {100 * s['mfu_local_peak_median']:.1f}% | {'-' if bf is None else f'{100 * bf:.1f}%'} "
            f"| {s['contended_repeats'] or 'none'} |"
        )
    lines += [
        "",
        "MFU = 3 x 2 x forward MACs/image x images/s / peak. A repeat is marked contended when a peak "
        "measured next to it is < 85% of the run's best peak or the 1-min load average exceeds the "
        "thread count.",
        "",
    ]
    if report["clock"] == "cpu":
        lines += [
            "Clock: process CPU time of a single thread, which other processes sharing the cores do not "
            "stretch (cache and SMT effects remain): the contention flags matter less here.",
            "",
        ]
    path.write_text("\n".join(lines))


def public_command(argv: list[str]) -> str:
    """The command line as recorded in committed results: no path of this machine (the script relative to the
    repository, a temporary ``--out`` as ``<tmp>``)."""
    import tempfile

    args = ["python", "benchmarks/train_step.py"]
    for i, a in enumerate(argv[1:]):
        prev = argv[i]  # argv[1:][i] follows argv[i]
        args.append("<tmp>" if prev == "--out" and a.startswith(tempfile.gettempdir()) else a)
    return " ".join(args)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["tiny-8", "DiT-S/2"])
    ap.add_argument("--modes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--variants", nargs="+", default=["fast"], choices=["fast", "baseline"])
    ap.add_argument("--batch", type=int, default=None, help="CPU default: 128 for tiny-8, 16 for DiT-S/2; GPU: 256")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="training steps per timed repeat")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument(
        "--attention", nargs="+", default=["sdpa"], choices=list(common.ATTENTION),
        help="sdpa: scaled_dot_product_attention picks its kernel; math: the reference math kernel",
    )
    ap.add_argument("--quick", action="store_true", help="3 repeats of 2 steps")
    ap.add_argument("--allocator", choices=["default", "glibc", "tcmalloc"], default="default",
                    help="default: ablate.run's glibc mallopt tuning; glibc: untouched; tcmalloc: preloaded")
    ap.add_argument("--no-tcmalloc", action="store_true", help=argparse.SUPPRESS)  # kept: tcmalloc is opt-in
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time, needs --threads 1 (a single thread's CPU time is not stretched "
        "by other processes sharing the cores: an A/B measurement on a busy machine)",
    )
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--name", default="train_step", help="output file stem: <out>/<name>.json and .md")
    ap.add_argument("--peak-n", type=int, default=None, help="matmul size of the peak (CPU 1024, GPU 8192)")
    ap.add_argument("--profile", action="store_true", help="also write <name>_profile.md (torch.profiler)")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if args.allocator == "tcmalloc" and TCMALLOC not in os.environ.get("LD_PRELOAD", ""):
        if not os.path.exists(TCMALLOC):
            ap.error(f"--allocator tcmalloc needs {TCMALLOC} (make tcmalloc installs it)")
        env = dict(os.environ, LD_PRELOAD=(TCMALLOC + " " + os.environ.get("LD_PRELOAD", "")).strip())
        os.execve(sys.executable, [sys.executable, *sys.argv], env)  # restart with tcmalloc preloaded
    if args.allocator == "default":
        from ablate.pipeline.jobs import tune_allocator

        print(f"[train_step] {tune_allocator()}", flush=True)
    if args.quick:
        args.repeats, args.steps, args.warmup = 3, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        if device.type != "cpu" or torch.get_num_threads() != 1:
            ap.error("--clock cpu needs --device cpu and --threads 1")
        global CLOCK
        CLOCK = time.process_time
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (peak and model alike)
    peak_n = args.peak_n or (8192 if device.type == "cuda" else 1024)

    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = []
    for preset, mode, variant, attention in itertools.product(args.presets, args.modes, args.variants,
                                                              args.attention):
        res = bench_one(args, preset, mode, variant, device, peak_n, attention)
        results.append(res)
        ips = [round(r["images_per_s"], 1) for r in res["repeats"]]
        print(f"{preset} {mode} {variant} {attention}: img/s {ips}", flush=True)
    peak16 = max(matmul_peak(device, torch.bfloat16, peak_n) for _ in range(2))
    peaks = [p for r in results for x in r["repeats"] for p in (x["peak_before"], x["peak_after"])]
    peak32 = max(peaks)
    threads = torch.get_num_threads()
    for r in results:
        r["summary"] = summarise(r, peak32, peak16, threads)
    report = dict(
        command=public_command(sys.argv),
        machine=common.machine_info(device),
        clock=args.clock,
        peak_n=peak_n,
        peak_fp32=peak32,
        peak_fp32_min=min(peaks),
        peak_bf16=peak16,
        loadavg_start=load0,
        results=results,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    write_markdown(out / f"{args.name}.md", report)
    print((out / f"{args.name}.md").read_text())
    if args.profile:
        tables = [profile_one(args, p, m, v, device) for p in args.presets for m in args.modes for v in args.variants]
        (out / f"{args.name}_profile.md").write_text("# Where the time goes\n\n" + "\n".join(tables))


if __name__ == "__main__":
    main()
