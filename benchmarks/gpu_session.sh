#!/usr/bin/env bash
# The GPU check as one script: install, `make gpu-check`'s measurements, the mission's 2 x 2 sweep on the GPU,
# every output collected in one flat folder.
#
#   bash benchmarks/gpu_session.sh OUT_DIR            # on a GPU machine, from the repository root
#
# Install: the README's install (`pip install -e .`) into the machine's own Python, which keeps its CUDA build
# of torch (nothing pins torch). On a machine without a package index, put the wheels of the missing pure-Python
# packages in a folder and set ABLATE_WHEELS=<folder>: they are installed from there (--no-index) and ablate
# itself is used from the checkout (PYTHONPATH), with no dependency resolution.
#
# Stages (each bounded by its own timeout, each writing its output as soon as it has it, so a stage that fails
# or runs out of time never loses the earlier ones):
#   1. env.txt              GPU, driver, Python and package versions
#   2. gpu_check.{json,md}  benchmarks/gpu_check.py: DiT-B/2 and XL/2 training step (bf16-mixed, flash SDPA),
#                           eager and torch.compile, Heun ODE sampling, peak memory, the real pipeline eager
#                           and compiled
#   3. sweep_results.jsonl  python -m ablate.run -m interpolant=vp,linear sampler=ode,sde trainer=gpu
#      sweep.log            (4 rows from 2 trainings; W&B off: logger=none)
#   4. gpu_check.md         rebuilt with the sweep's table (`gpu_check.py --render OUT_DIR`)
#   5. session.log          everything printed
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu_session.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
exec > >(tee -a "$OUT/session.log") 2>&1
stamp() { echo "[gpu-session $(date -u +%H:%M:%S)] $*"; }

stamp "install"
if [ -n "${ABLATE_WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/ablate-site "$ABLATE_WHEELS"/*.whl \
    || { stamp "wheel install failed"; exit 1; }
  export PYTHONPATH="/tmp/ablate-site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
  $PY -m pip install -q -e . || { stamp "pip install -e . failed"; exit 1; }
fi
$PY -c "import ablate, hydra, omegaconf, torch_fidelity, lightning, torch; print('imports ok', torch.__version__)" \
  || { stamp "imports failed"; exit 1; }

stamp "environment"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  $PY -c "import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"
  $PY -m pip list 2>/dev/null | grep -iE '^(torch|lightning|pytorch-lightning|hydra-core|omegaconf|torch-fidelity|torchdiffeq|numpy|triton) '
  echo "ablate commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

stamp "gpu-check"
timeout "${GPU_CHECK_TIMEOUT:-330}" $PY benchmarks/gpu_check.py --out "$OUT" ${GPU_CHECK_ARGS:-}
stamp "gpu-check exit $?"

stamp "sweep: python -m ablate.run -m interpolant=vp,linear sampler=ode,sde trainer=gpu"
SWEEP_OUT=/tmp/ablate-gpu-sweep
rm -rf "$SWEEP_OUT"
t0=$(date +%s)
timeout "${SWEEP_TIMEOUT:-240}" $PY -m ablate.run -m interpolant=vp,linear sampler=ode,sde trainer=gpu logger=none \
  out_dir="$SWEEP_OUT" ${SWEEP_ARGS:-} 2>&1 | tee "$OUT/sweep.log" | grep -E '^\[ablate\]|Error|error' | head -40
stamp "sweep exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 )) s"
cp "$SWEEP_OUT/results.jsonl" "$OUT/sweep_results.jsonl" 2>/dev/null || stamp "no sweep results"
ls "$SWEEP_OUT/checkpoints" 2>/dev/null | sed 's/^/trained checkpoint: /'
[ -f "$OUT/gpu_check.json" ] && $PY benchmarks/gpu_check.py --render "$OUT" > /dev/null  # adds the sweep table
stamp "done"
