"""``make bench``: every benchmark in one run, as ratios measured side by side -> ``bench.json`` + ``bench.md``.

Parts (each also runnable alone, see benchmarks/README.md):

1. training step (``train_step.py``): images/s and MFU per preset against the fp32 and bf16 matmul peaks
   measured in the same run; fp32 vs bf16-mixed; SDPA vs math attention; torch.compile on/off (full mode);
2. sampling (``sampling.py``): wall time per NFE and NFE per image of every sampler, SDE vs Euler step cost,
   the SiT-reference 2-evaluation SDE step, guidance cost, bf16 / compile with their FID effect;
3. evaluation (``evaluation.py``): feature extraction images/s, Frechet-distance time, Inception if present;
4. sweeps (``sweep.py``): trainings launched and wall time of ``-m interpolant=vp,linear sampler=ode,sde``
   against the naive count of 4.

``--quick`` (the default; < 5 minutes on a quiet 2-core CPU) uses small batches and few repeats and says so;
``--full`` is meant for a GPU machine (larger batches, compile, DiT-B/2 training steps, 1,000-sample FIDs).

Usage::

    python benchmarks/run_all.py                   # quick, -> benchmarks/results/bench.{json,md}
    python benchmarks/run_all.py --full            # on a GPU
    python benchmarks/run_all.py --parts sampling evaluation
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import torch

PARTS = ("train", "sampling", "evaluation", "sweep")
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def train_part(quick: bool, device: str) -> dict:
    """Training-step runs of ``train_step.py``, one subprocess per group (the allocator is per process), merged.

    The default path as a user gets it (``allocator=default``: the precision chosen per mode, ablate.run's
    allocator tuning, no preload) next to the variants: glibc's untouched allocator, tcmalloc when installed,
    math attention, and torch.compile (its first step, the compilation from an empty cache, timed apart)."""
    tiny = ["--presets", "tiny-8", "--modes", "fp32", "bf16"]
    groups = {
        "tiny8": [*tiny, "--attention", "sdpa", "math"],
        "tiny8_glibc": [*tiny, "--allocator", "glibc"],
        "tiny8_compile": ["--presets", "tiny-8", "--modes", "bf16", "--compile"],
        # DiT-S/2 (256-px latents, 256 tokens): fp32 vs bf16
        "dits2": ["--presets", "DiT-S/2", "--modes", "fp32", "bf16"],
    }
    if os.path.exists(TCMALLOC):
        groups["tiny8_tcmalloc"] = [*tiny, "--allocator", "tcmalloc"]
    if not quick:
        groups["compile"] = ["--presets", "tiny-8", "DiT-S/2", "--modes", "fp32", "bf16", "--compile"]
        if device == "cuda":
            groups["ditb2"] = ["--presets", "DiT-B/2", "--modes", "bf16", "--attention", "sdpa", "math"]
    budget = ["--repeats", "3", "--steps", "2", "--warmup", "2"] if quick else ["--repeats", "5", "--steps", "3"]
    out: dict = {"groups": {}}
    script = Path(__file__).resolve().parent / "train_step.py"
    with tempfile.TemporaryDirectory(prefix="ablate-bench-train-") as tmp:
        for name, args in groups.items():
            cmd = [sys.executable, str(script), *args, *budget, "--device", device, "--out", tmp, "--name", name]
            # compile from a cold cache, as a user's first run does (a warm inductor cache made it ~10x faster)
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / f"inductor-{name}")}
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
            out["groups"][name] = json.loads((Path(tmp) / f"{name}.json").read_text())
    rows = [r for g in out["groups"].values() for r in g["results"]]
    out["peak_fp32"] = max(g["peak_fp32"] for g in out["groups"].values())
    out["peak_bf16"] = max(g["peak_bf16"] for g in out["groups"].values())
    out["ratios"] = train_ratios(rows)
    return out


def _median_ips(rows, **match):
    for r in rows:
        if all(r.get(k, d) == v for k, (v, d) in match.items()):
            return r["summary"]["images_per_s"]["median"]
    return None


def train_ratios(rows: list[dict]) -> dict:
    """Speed-ups (median images/s ratios) of bf16 over fp32, SDPA over math, compile over eager, per preset."""
    out = {}
    for preset in sorted({r["preset"] for r in rows}):
        base = dict(preset=(preset, None), variant=("fast", None), compile=(False, False),
                    attention=("sdpa", "sdpa"), allocator=("default", "default"))
        f32 = _median_ips(rows, **base, mode=("fp32", None))
        glibc = {**base, "allocator": ("glibc", "default")}
        pairs = {
            # the headline: the default now (bf16 where the CPU has it, tuned allocator) over the previous default
            "default bf16 / previous default (fp32, glibc)": (_median_ips(rows, **base, mode=("bf16", None)),
                                                               _median_ips(rows, **glibc, mode=("fp32", None))),
            "bf16 / fp32": (_median_ips(rows, **base, mode=("bf16", None)), f32),
            "tuned allocator / glibc (fp32)": (f32, _median_ips(rows, **glibc, mode=("fp32", None))),
            "tuned allocator / glibc (bf16)": (_median_ips(rows, **base, mode=("bf16", None)),
                                               _median_ips(rows, **glibc, mode=("bf16", None))),
            "tcmalloc / tuned allocator (bf16)": (
                _median_ips(rows, **{**base, "allocator": ("tcmalloc", "default")}, mode=("bf16", None)),
                _median_ips(rows, **base, mode=("bf16", None))),
            "sdpa / math (fp32)": (f32, _median_ips(rows, **{**base, "attention": ("math", "sdpa")},
                                                    mode=("fp32", None))),
            "compile / eager (fp32)": (_median_ips(rows, **{**base, "compile": (True, False)},
                                                   mode=("fp32", None)), f32),
            "compile / eager (bf16)": (_median_ips(rows, **{**base, "compile": (True, False)}, mode=("bf16", None)),
                                       _median_ips(rows, **base, mode=("bf16", None))),
        }
        out[preset] = {k: a / b for k, (a, b) in pairs.items() if a and b}
        comp = next((r for r in rows if r["preset"] == preset and r.get("compile") and r["mode"] == "bf16"), None)
        eager = _median_ips(rows, **base, mode=("bf16", None))
        if comp and eager:
            fast = comp["summary"]["images_per_s"]["median"]
            batch = comp["batch"]
            saved = batch / eager - batch / fast  # seconds saved per step once compiled
            out[preset]["compile (bf16): first step s (cold cache)"] = comp["first_step_s"]
            if saved > 0:
                out[preset]["compile (bf16): steps to pay back"] = comp["first_step_s"] / saved
    return out


def train_markdown(rep: dict) -> list[str]:
    lines = ["## Training step", "",
             f"Matmul peaks measured in this run: fp32 {rep['peak_fp32'] / 1e9:.1f} GFLOP/s, bf16 "
             f"{rep['peak_bf16'] / 1e9:.1f} GFLOP/s (best of the run).", "",
             "| preset | batch | mode | attention | allocator | compile | img/s min / med / max | MFU vs fp32 peak "
             "(med) | MFU vs adjacent peak | MFU vs bf16 peak | contended repeats |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in rep["groups"].values():
        for r in g["results"]:
            s, i = r["summary"], r["summary"]["images_per_s"]
            bf = s.get("mfu_bf16_peak_median")
            lines.append(f"| {r['preset']} | {r['batch']} | {r['mode']} | {r.get('attention', 'sdpa')} | "
                         f"{r.get('allocator', 'default')} | {'on' if r['compile'] else 'off'} | "
                         f"{i['min']:.1f} / {i['median']:.1f} / {i['max']:.1f} | "
                         f"{100 * s['mfu_fp32_peak']['median']:.1f}% | {100 * s['mfu_local_peak_median']:.1f}% | "
                         f"{'-' if bf is None else f'{100 * bf:.1f}%'} | {s['contended_repeats'] or 'none'} |")
    lines += ["", "| preset | ratio (median images/s) | value |", "|---|---|---|"]
    for preset, ratios in rep["ratios"].items():
        for k, v in ratios.items():
            lines.append(f"| {preset} | {k} | {v:.3f} |")
    lines.append("")
    return lines


def write_markdown(path: Path, report: dict) -> None:
    m = report["machine"]
    lines = ["# ablate benchmarks", "", f"`{report['command']}` ({report['mode']} mode, {report['wall_s']:.0f} s, "
             f"{report['date']})", "",
             f"- machine: {m['cpu']} ({m['cpu_count']} cpus, torch threads {m['torch_threads']}), "
             f"{m.get('gpu', 'no GPU')}; LD_PRELOAD={m['ld_preload'] or '(none)'}",
             f"- versions: python {m['python']}, torch {m['torch']}, lightning {m['lightning']}, hydra "
             f"{m['hydra']}, torch-fidelity {m['torch_fidelity']}, torchdiffeq {m['torchdiffeq']}",
             f"- load average at start / end: {report['loadavg_start']:.2f} / {report['loadavg_end']:.2f} "
             "(a figure measured with a load above the thread count is marked contended)",
             "- every figure: min / median / max over the repeats stated; ratios are paired per repeat", ""]
    import evaluation
    import sampling
    import sweep

    md = {"train": train_markdown, "sampling": sampling.markdown, "evaluation": evaluation.markdown,
          "sweep": sweep.markdown}
    for part in PARTS:
        if part in report["parts"]:
            lines += md[part](report["parts"][part])
        elif part in report.get("errors", {}):
            lines += [f"## {part}", "", f"FAILED: {report['errors'][part]}", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the default: < 5 min on a 2-core CPU")
    mode.add_argument("--full", action="store_true", help="larger budgets, compile; meant for a GPU")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--name", default="bench")
    ap.add_argument("--no-tcmalloc", action="store_true", help=argparse.SUPPRESS)  # kept: tcmalloc is opt-in
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tests: tiny budgets
    args = ap.parse_args(argv)
    quick = not args.full
    if argv is None and args.device == "cpu":
        from ablate.pipeline.jobs import tune_allocator

        print(f"[bench] {tune_allocator()} (the default path, as python -m ablate.run has it)", flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0, load0 = time.time(), common.loadavg()
    parts, errors = {}, {}
    for part in args.parts:
        print(f"[bench] {part} ...", flush=True)
        t = time.time()
        try:
            parts[part] = run_part(part, quick, args.device, args.smoke)
        except Exception as e:  # one failing part is reported; the others still run
            errors[part] = f"{type(e).__name__}: {str(e)[:2000]}"
            print(f"[bench] {part} FAILED: {errors[part]}", flush=True)
        print(f"[bench] {part} done in {time.time() - t:.0f} s", flush=True)
    report = dict(command=" ".join(["python", "benchmarks/run_all.py", *(sys.argv[1:] if argv is None else argv)]),
                  mode="quick" if quick else "full", date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  wall_s=time.time() - t0, machine=common.machine_info(args.device), loadavg_start=load0,
                  loadavg_end=common.loadavg(), parts=parts, errors=errors)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    write_markdown(out / f"{args.name}.md", report)
    print((out / f"{args.name}.md").read_text())
    return report


def run_part(part: str, quick: bool, device: str, smoke: bool = False) -> dict:
    if part == "train":
        return train_part(quick, device) if not smoke else _smoke_train(device)
    if part == "sampling":
        import sampling

        if smoke:
            return sampling.run(True, batch=2, repeats=1, nfe=4, fid_samples=20, fid_steps=2, checkpoint=None,
                                tolerances=((1e-2, 1e-2),))
        return sampling.run(quick, device=device)
    if part == "evaluation":
        import evaluation

        return evaluation.run(quick, smoke=smoke)
    import sweep

    return sweep.run(quick, train_steps=2 if smoke else None)


def _smoke_train(device: str) -> dict:
    script = Path(__file__).resolve().parent / "train_step.py"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(script), "--presets", "tiny-8", "--modes", "fp32", "bf16", "--attention",
                        "sdpa", "math", "--batch", "4", "--repeats", "1", "--steps", "1", "--warmup", "1", "--peak-n",
                        "128", "--device", device, "--out", tmp, "--name", "smoke"], check=True,
                       stdout=subprocess.DEVNULL)
        g = json.loads((Path(tmp) / "smoke.json").read_text())
    rows = g["results"]
    return dict(groups={"smoke": g}, peak_fp32=g["peak_fp32"], peak_bf16=g["peak_bf16"], ratios=train_ratios(rows))


if __name__ == "__main__":
    main()
