"""Loading the official DiT and SiT checkpoints (``DiT-XL-2-256x256.pt``, ``DiT-XL-2-512x512.pt``,
``SiT-XL-2-256x256.pt``) into :class:`~ablate.models.dit.DiT`, whose parameter names are the official ones.

Accepted files (always read with ``torch.load(..., weights_only=True)``; ``argparse.Namespace`` is the one
extra type allowed, because the official training scripts store their ``args`` next to the weights):

- a plain state dict (the released files: EMA weights);
- a training checkpoint ``{"model": ..., "ema": ..., ["opt": ..., "args": ...]}`` (EMA preferred:
  ``use_ema``);
- ``{"state_dict": ...}``; ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes are stripped.

A checkpoint may also be passed already loaded: a dict as above (e.g. ``torch.load``'s result, or a model's
``state_dict()``).

The architecture (depth, width, patch, input size, channels, classes, learn_sigma, MLP ratio) is inferred from
the tensor shapes; heads are not visible in the weights (every head count fits the same tensors, and a wrong
one silently changes the outputs), so they come from the table of known widths (the paper's four, 384/768/
1024/1152, and ablate's tiny presets, 256); for any other width ``load_official`` requires ``num_heads=``
(``infer_config`` warns and guesses width // 64). Keyword arguments that contradict the file raise a
``ValueError`` naming the configuration that would fit.

Time and output conventions (``CheckpointInfo``), converted only here at the edge (docs/design.md, "Conventions"):

- ``dit``: the network sees the DDPM integer index n in 0..999 and predicts the noise eps (first C channels)
  and the learned-variance interpolation v (last C channels; Nichol & Dhariwal 2021, eq. 15).
- ``sit``: the network saw the SiT *repository's* time t_sit = 1 - t (t_sit = 0 is noise) and predicts the
  velocity in that time, v_sit = dx/dt_sit = -v. Its checkpoint carries 8 output channels of which SiT uses
  the first 4 (``return_sigma=False``). ``info.paper_time(model)`` wraps the network as
  x, t, y -> -net(x, 1 - t, y), a velocity model in the library's (paper) time.
"""

from __future__ import annotations

import argparse
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .dit import DiT
from .registry import PRESETS

__all__ = ["load_official", "infer_config", "CheckpointInfo", "SiTPaperTime", "KINDS"]

KINDS = ("dit", "sit", "auto")
# DiT Table 1: heads for each width (head dimension 64 for S/B, 64/72 for L/XL), and ablate's tiny presets.
_HEADS = {384: 6, 768: 12, 1024: 16, 1152: 16}
for _p in PRESETS.values():
    if _HEADS.setdefault(_p["hidden_size"], _p["num_heads"]) != _p["num_heads"]:  # pragma: no cover
        raise AssertionError(f"presets disagree on the heads of width {_p['hidden_size']}")
del _p
STATE_DICT_PATH = "<state dict>"  # CheckpointInfo.path when load_official is given a loaded checkpoint
_ARCH_KEYS = (
    "depth",
    "hidden_size",
    "patch_size",
    "input_size",
    "in_channels",
    "num_classes",
    "learn_sigma",
    "class_dropout_prob",
    "mlp_ratio",
    "num_heads",
)


@dataclass(frozen=True)
class CheckpointInfo:
    """What a loaded checkpoint expects and returns.

    kind: "dit" or "sit".
    config: the DiT keyword arguments the model was built with.
    network_time: "ddpm_index" (integer n in 0..num_timesteps-1) or "sit_reversed" (t_sit = 1 - t in [0, 1]).
    prediction: "noise" (DiT, with the learned variance in the last C channels) or "velocity".
    output_sign: +1, or -1 when the network's output is the negative of the library's target (SiT velocity).
    entry: which part of the file was used ("state_dict", "ema", "model").
    """

    kind: str
    path: str
    config: dict
    network_time: str
    prediction: str
    output_sign: int
    entry: str
    num_timesteps: int | None = None

    def paper_time(self, model: nn.Module) -> nn.Module:
        """The network in the library's time and sign convention (SiT only; DiT is fed DDPM indices by the
        discrete-time axis, which owns that conversion)."""
        if self.kind != "sit":
            raise ValueError(
                "paper_time() is for SiT checkpoints; a DiT checkpoint takes the DDPM index n in 0..999 "
                "(feed it through the discrete-time axis)"
            )
        return SiTPaperTime(model)

    def as_dict(self) -> dict:
        return asdict(self)


class SiTPaperTime(nn.Module):
    """Adapter: v(x, t) = -v_sit(x, 1 - t) (SiT paper time t = 0 data; repository time t_sit = 1 - t).

    The SiT repository's linear path is x = t_sit x_data + (1 - t_sit) eps, so dx/dt_sit = -dx/dt."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return -self.net(x, 1 - torch.as_tensor(t, device=x.device), y)

    def forward_with_cfg(
        self, x: Tensor, t: Tensor, y: Tensor, cfg_scale: float, guided_channels=None
    ) -> Tensor:
        # Guidance is affine in the output, so it commutes with the sign flip.
        t_sit = 1 - torch.as_tensor(t, device=x.device)
        return -self.net.forward_with_cfg(x, t_sit, y, cfg_scale, guided_channels=guided_channels)


# ----------------------------------------------------------------------------------------------------------
# Reading and inferring
# ----------------------------------------------------------------------------------------------------------


def _read(path: str | os.PathLike, map_location) -> object:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location=map_location, weights_only=True)


def _unwrap(obj: object, use_ema: bool) -> tuple[dict, str]:
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, expected a state dict or a dict of them")
    order = ("ema", "model") if use_ema else ("model", "ema")
    for key in (*order, "state_dict"):
        if isinstance(obj.get(key), dict):
            sd, entry = obj[key], key
            break
    else:
        sd, entry = obj, "state_dict"
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    if not all(isinstance(v, Tensor) for v in out.values()):
        bad = [k for k, v in out.items() if not isinstance(v, Tensor)][:3]
        raise ValueError(f"checkpoint entry {entry!r} is not a state dict (non-tensor values at {bad})")
    return out, entry


def infer_config(state_dict: dict[str, Tensor], num_heads: int | None = None) -> dict:
    """DiT keyword arguments implied by the tensor shapes of an official-format state dict.

    Heads: ``num_heads`` if given, else the table of known widths; for another width a ``UserWarning`` and the
    guess width // 64 (the tensors fit every head count: check it)."""
    required = ("x_embedder.proj.weight", "pos_embed", "final_layer.linear.weight", "blocks.0.mlp.fc1.weight")
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise ValueError(f"not a DiT/SiT state dict: missing {missing} (found e.g. {list(state_dict)[:5]})")
    D, C, p, _ = state_dict["x_embedder.proj.weight"].shape
    T = state_dict["pos_embed"].shape[1]
    grid = math.isqrt(T)
    if grid * grid != T:
        raise ValueError(f"pos_embed has {T} tokens, not a square grid")
    c_out = state_dict["final_layer.linear.weight"].shape[0] // (p * p)
    depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
    if num_heads is None and D not in _HEADS:
        warnings.warn(
            f"width {D} is not in the table of known widths {sorted(_HEADS)}: the number of heads cannot be read "
            f"from the weights; guessing num_heads = {max(1, D // 64)} (width // 64). Pass num_heads= to be sure.",
            UserWarning,
            stacklevel=2,
        )
    cfg = dict(
        depth=depth,
        hidden_size=D,
        patch_size=p,
        input_size=grid * p,
        in_channels=C,
        learn_sigma=c_out == 2 * C,
        num_heads=int(num_heads) if num_heads is not None else _HEADS.get(D, max(1, D // 64)),
        mlp_ratio=state_dict["blocks.0.mlp.fc1.weight"].shape[0] / D,
    )
    if c_out not in (C, 2 * C):
        raise ValueError(
            f"final layer has {c_out} output channels for {C} input channels (expected {C} or {2 * C})"
        )
    table = state_dict.get("y_embedder.embedding_table.weight")
    if table is None:
        cfg.update(num_classes=0, class_dropout_prob=0.0)
    else:  # official: num_classes + 1 rows (the null class) when trained with class dropout
        cfg.update(num_classes=table.shape[0] - 1, class_dropout_prob=0.1)
    return cfg


def _nearest_preset(cfg: dict) -> str | None:
    for name, p in PRESETS.items():
        if all(p[k] == cfg[k] for k in ("depth", "hidden_size", "patch_size")):
            return name
    return None


def _describe(cfg: dict) -> str:
    preset = _nearest_preset(cfg)
    args = ", ".join(f"{k}={cfg[k]!r}" for k in _ARCH_KEYS if k in cfg)
    return f"DiT({args})" + (f" (preset {preset!r} with these overrides)" if preset else "")


def _guess_kind(path: str, obj: object) -> str:
    args = obj.get("args") if isinstance(obj, dict) else None
    model_name = str(getattr(args, "model", "")) if args is not None else ""
    for text in (model_name, os.path.basename(str(path))):
        low = text.lower()
        if low.startswith("sit") or "sit-" in low or "sit_" in low:
            return "sit"
        if low.startswith("dit") or "dit-" in low or "dit_" in low:
            return "dit"
    raise ValueError(
        f"cannot tell whether {path!r} is a DiT or a SiT checkpoint (same architecture; the file name and "
        f"stored args say neither): pass kind='dit' or kind='sit' (valid kinds: {list(KINDS)})"
    )


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------


def load_official(
    path: str | os.PathLike | Mapping,
    kind: str = "auto",
    map_location: str | torch.device = "cpu",
    use_ema: bool = True,
    **build_kw,
) -> tuple[DiT, CheckpointInfo]:
    """Load an official DiT/SiT checkpoint: ``model, info = load_official("SiT-XL-2-256x256.pt")``.

    ``path``: a file, or a checkpoint already loaded (a state dict or a ``{"model", "ema", ...}`` dict; its
    tensors are used as they are, ``map_location`` does not apply). ``kind``: "dit", "sit" or "auto" (from the
    stored args or the file name; a loaded state dict without ``args`` needs ``kind``). ``build_kw`` override
    inferred :class:`DiT` arguments (e.g. ``num_heads``, ``class_dropout_prob``, ``return_sigma``); an override
    that contradicts the tensor shapes raises a ``ValueError`` naming the configuration that fits the file.
    ``num_heads`` is required for a width outside the table of known widths (module docstring).
    Returns the model in eval mode and a :class:`CheckpointInfo` (time input, prediction, sign).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; valid kinds: {list(KINDS)}")
    loaded = isinstance(path, Mapping)
    obj = dict(path) if loaded else _read(path, map_location)
    path = STATE_DICT_PATH if loaded else os.fspath(path)
    sd, entry = _unwrap(obj, use_ema)
    if kind == "auto":
        kind = _guess_kind(path, obj)
    width = sd["x_embedder.proj.weight"].shape[0] if "x_embedder.proj.weight" in sd else None
    if width is not None and width not in _HEADS and "num_heads" not in build_kw:
        raise ValueError(
            f"checkpoint {path!r} has width {width}, outside the table of known widths {sorted(_HEADS)}: the "
            f"number of heads cannot be read from the weights (every count fits them), pass num_heads= "
            f"(e.g. num_heads={max(1, width // 64)} for a head dimension of 64)"
        )
    inferred = infer_config(sd, num_heads=build_kw.get("num_heads"))
    cfg = dict(inferred, **build_kw)
    # SiT's network carries a variance head it never uses (its forward keeps the first C channels).
    cfg.setdefault("return_sigma", kind == "dit")
    if cfg.get("num_classes") != inferred["num_classes"] and "class_dropout_prob" not in build_kw:
        cfg["class_dropout_prob"] = 0.0  # e.g. num_classes=1001 for a table without a null row
    model = DiT(**cfg)
    own = model.state_dict()
    mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in sd.items()
        if k in own and v.shape != own[k].shape
    ]
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if mismatched or missing or unexpected:
        details = "; ".join(
            [f"{k}: file {a} vs model {b}" for k, a, b in mismatched[:4]]
            + ([f"missing {missing[:4]}"] if missing else [])
            + ([f"unexpected {unexpected[:4]}"] if unexpected else [])
        )
        asked = ", ".join(f"{k}={v!r}" for k, v in build_kw.items())
        raise ValueError(
            f"checkpoint {path!r} does not fit DiT({asked}): {details}. "
            f"The file fits {_describe(inferred)}"
        )
    model.load_state_dict(sd, strict=True)
    model.eval()
    info = CheckpointInfo(
        kind=kind,
        path=path,
        config={k: cfg[k] for k in (*_ARCH_KEYS, "return_sigma")},
        network_time="ddpm_index" if kind == "dit" else "sit_reversed",
        prediction="noise" if kind == "dit" else "velocity",
        output_sign=1 if kind == "dit" else -1,
        entry=entry,
        num_timesteps=1000 if kind == "dit" else None,
    )
    return model, info
