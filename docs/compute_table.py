"""Print the compute table of docs/scale_out.md: the SiT walk (experiments/sit_walk.yaml) at paper scale.

Accounting (``ablate.metrics.flops``; the papers' "Gflops" are multiply-accumulates, MACs):

- training:  3 x model GMACs x steps x global batch          (forward 1x + backward 2x)
- sampling:  NFE x model GMACs x number of samples (x2 with classifier-free guidance)
- FLOPs = 2 x MACs; GPU-hours = FLOPs / (MFU x dense bf16 peak) / 3600.

Rows that differ only in the sampler reuse one checkpoint (train once, sample many), so the study's total
counts each training configuration once. Usage: ``python docs/compute_table.py [--mfu-train 0.4]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate.metrics.flops import model_gflops, sample_gflops, train_gflops  # noqa: E402
from ablate.models import build_model  # noqa: E402
from ablate.studies import load_study  # noqa: E402

PEAKS = {"H100 SXM": 989e12, "A100": 312e12}  # dense bf16 FLOP/s, NVIDIA datasheets
TRAIN_AXES = ("time", "prediction", "interpolant", "weighting", "time_density")


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=400_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--mfu-train", type=float, default=0.40)
    p.add_argument("--mfu-sample", type=float, default=0.30)
    a = p.parse_args(argv)
    with torch.device("meta"):
        g = {ls: model_gflops(build_model("DiT-B/2", learn_sigma=ls)) for ls in (True, False)}
    study = load_study("sit_walk")
    seen: dict[tuple, str] = {}
    tot_train = tot_sample = 0.0
    print("| row | setting | trains? | NFE | train EFLOP | FID-50K sampling PFLOP | "
          "H100 GPU-h (train + sample) | A100 GPU-h (train + sample) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in study.rows:
        ov = dict(o.split("=", 1) for o in r.overrides)
        key = tuple(ov.get(k, "") for k in TRAIN_AXES)
        gm = g[ov.get("time") == "discrete"]  # DDPM learns the variance (learn_sigma), SiT does not
        nfe = int(r.budget["nfe"])
        s_flop = 2e9 * sample_gflops(gm, nfe, float(r.budget.get("cfg", 1.0)) != 1.0) * a.samples
        if key in seen:
            t_flop, trains = 0.0, f"reuses {seen[key]}"
        else:
            seen[key] = r.id
            t_flop, trains = 2e9 * train_gflops(gm, a.steps * a.batch), "yes"
        tot_train += t_flop
        tot_sample += s_flop
        hours = {n: (t_flop / (a.mfu_train * pk) + s_flop / (a.mfu_sample * pk)) / 3600 for n, pk in PEAKS.items()}
        print(f"| {r.id} | {r.setting} | {trains} | {nfe} | {t_flop / 1e18:.2f} | {s_flop / 1e15:.0f} | "
              f"{hours['H100 SXM']:.1f} | {hours['A100']:.1f} |")
    hours = {n: (tot_train / (a.mfu_train * pk) + tot_sample / (a.mfu_sample * pk)) / 3600 for n, pk in PEAKS.items()}
    print(f"| total | {len(seen)} trainings, {len(study.rows)} FID-50K evaluations | | | {tot_train / 1e18:.2f} | "
          f"{tot_sample / 1e15:.0f} | {hours['H100 SXM']:.0f} | {hours['A100']:.0f} |")
    print(f"\nDiT-B/2 forward: {g[False]:.3f} GMACs/image (SiT), {g[True]:.3f} (DDPM, learn_sigma); "
          f"MFU assumed: training {a.mfu_train:.0%}, sampling {a.mfu_sample:.0%}.")


if __name__ == "__main__":
    main()
