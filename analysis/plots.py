# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Plots of the studies
#
# FID (with 95% intervals over seeds) against forward GFLOPs (DiT's scaling figure, from `dit_scaling` and
# `sit_sizes`), FID against NFE (SiT Fig. 5, from `nfe_sweep`), FID against the guidance scale (`cfg_sweep`)
# and FID over training (every run in the store). Every point is read from the results rows; a panel without
# runs says "no run". Run headless with `make tables` (or `python analysis/plots.py`; open it in Jupyter with jupytext).

# %%
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0] if "__file__" in globals() else "analysis")
from _settings import OUT, RESULTS, SCALE, WANDB_EXPORT, WANDB_PROJECT  # noqa: E402

from ablate.studies import load_study  # noqa: E402
from ablate.studies.plots import plot_fid_over_training, plot_fid_vs_gflops, plot_fid_vs_x  # noqa: E402
from ablate.studies.tables import load_rows, study_table  # noqa: E402

df = load_rows(RESULTS, WANDB_PROJECT, WANDB_EXPORT)
plots = OUT / "plots"
print(f"{len(df)} rows; plots -> {plots}")

# %% FID vs GFLOPs (DiT Table 4 / scaling figure; SiT sizes)
for name in ("dit_scaling", "sit_sizes"):
    study = load_study(name)
    t = study_table(study, df, SCALE)
    print(plot_fid_vs_gflops(t, plots / f"{name}_fid_vs_gflops.png", title=name))

# %% FID vs NFE (SiT Fig. 5)
t = study_table("nfe_sweep", df, SCALE, gflops=False)
print(plot_fid_vs_x(t, "nfe", plots / "nfe_sweep_fid_vs_nfe.png", "NFE per image", "nfe_sweep", logx=True))

# %% FID vs guidance scale
t = study_table("cfg_sweep", df, SCALE, gflops=False)
print(plot_fid_vs_x(t, "cfg", plots / "cfg_sweep_fid_vs_cfg.png", "guidance scale", "cfg_sweep"))

# %% FID over training
print(plot_fid_over_training(df, plots / "fid_over_training.png"))
