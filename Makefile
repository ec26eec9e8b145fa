# ablate: set-up, tests and studies. `make test` installs what it needs first (idempotent).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-all lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,launchers,vae,tables,dashboard]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check ablate tests

clean:
	rm -rf $(VENV) outputs multirun runs .pytest_cache

# Forward GMACs per image of the DiT presets next to DiT Table 4.
.PHONY: gflops bench
gflops: $(STAMP)
	$(BIN)/python -m ablate.metrics.flops

# Benchmarks, every part in one run (training step MFU, samplers' cost per NFE, evaluation, sweep reuse):
# `make bench` = quick mode (< 5 min on a quiet 2-core CPU), `make bench-full` = larger budgets + compile (GPU).
# Writes benchmarks/results/bench.json + bench.md (ARGS="--parts sampling ..." for a subset). The default path is
# measured as a user gets it (no preload); the fp32 / bf16 / compile / allocator variants run side by side.
.PHONY: bench-full
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --quick --out benchmarks/results $(ARGS)

bench-full: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --full --out benchmarks/results $(ARGS)

# The main job: train + evaluate the default configuration on the embedded digits.
.PHONY: run
run: $(STAMP)
	$(BIN)/python -m ablate.run $(ARGS)

# The GPU fast path (bf16-mixed, TF32, flash SDPA; --compile for torch.compile) on one GPU in under 5 minutes:
# training-step and sampler throughput, MFU and GPU utilisation, plus one real `ablate.run trainer=gpu` run
# (steps/s, FID) -> benchmarks/results/gpu_check.{json,md}.
# Exits with status 2 and a clear message when CUDA is absent.
.PHONY: gpu-check
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py $(ARGS)

# Optional: tcmalloc, for comparison (`make bench` then adds it as a variant; ablate.run's own allocator tuning
# needs no system package). Use it with LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.
.PHONY: tcmalloc
tcmalloc:
	dpkg -s libtcmalloc-minimal4 >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q libtcmalloc-minimal4)

# Study tables + plots + results/README.md + results/reading.md from the committed rows (no training; analysis/).
# RESULTS=<store> SCALE=cpu|paper TABLES_OUT=<dir>; WANDB_PROJECT=entity/project reads a W&B project
# instead (public API, network), WANDB_EXPORT=<json> its offline export (ablate.studies.wandb_import.export_wandb).
RESULTS ?= results/cpu/results.jsonl
SCALE ?= cpu
TABLES_OUT ?= results
.PHONY: tables study study-commit
tables: $(STAMP)
	for nb in analysis/plots.py analysis/tables.py; do \
	  ABLATE_RESULTS="$(RESULTS)" ABLATE_SCALE="$(SCALE)" ABLATE_TABLES_OUT="$(TABLES_OUT)" \
	  WANDB_PROJECT="$(WANDB_PROJECT)" WANDB_EXPORT="$(WANDB_EXPORT)" MPLBACKEND=Agg $(BIN)/python $$nb || exit 1; \
	done

# One CPU-scale study end to end: one Hydra multirun over its rows x SEEDS into its own store (runs/studies, not a
# tracked file; points already there are skipped), then ours-now vs the committed rows for each row.
# make study STUDY=sit_walk [SEEDS=0,1,2] [ARGS="hydra/launcher=joblib_cpu ..."]. Committing the rows is explicit:
# make study-commit STUDY=sit_walk (then make tables).
STUDY ?= sit_walk
SEEDS ?= 0
study: $(STAMP)
	$(BIN)/python -m ablate.studies run $(STUDY) --scale cpu --seeds $(SEEDS) $(ARGS)

study-commit: $(STAMP)
	$(BIN)/python -m ablate.studies commit $(STUDY) --scale cpu

# Fashion-MNIST (70k, 28x28, 10 classes) from the Debian package dataset-fashion-mnist, unpacked once into the data cache.
.PHONY: data-fashion
data-fashion: $(STAMP)
	$(BIN)/python -m ablate.data.fashion
