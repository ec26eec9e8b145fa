"""GFLOPs accounting in the DiT/SiT papers' unit: multiply-accumulates (MACs) per image, in units of 1e9.

The DiT paper's "Gflops" (Table 4; DiT-XL/2 at 256 px: 118.64) count one multiply-add as one operation.
``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per multiply-add, so ``model_gflops`` halves it.
On CPU the fused scaled-dot-product-attention kernel is not counted by FlopCounterMode; the forward therefore
runs inside ``sdpa_kernel(SDPBackend.MATH)``, whose matmuls are counted (on the meta device nothing is
computed, so counting is instant even for DiT-XL/2 at 512 px).

Three figures per run (docs/design.md, "GFLOPs"):

- ``model_gflops``: one forward pass, per image;
- ``sample_gflops = NFE x model_gflops x (2 with classifier-free guidance)``;
- ``train_gflops = 3 x model_gflops x images seen`` (forward + backward ~ 3 forwards; Kaplan et al. 2020).

``python -m ablate.metrics.flops`` prints every paper configuration next to DiT Table 4.
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["model_gflops", "sample_gflops", "train_gflops", "table4", "DIT_TABLE4_GFLOPS"]

# DiT Table 4, "Gflops" column (forward GMACs per image); 256 px unless stated. Cross-checked in the tests
# against experiments/reference/dit_table4.csv (the published table, with its citation).
DIT_TABLE4_GFLOPS: dict[tuple[str, int], float] = {
    ("DiT-S/8", 256): 0.36,
    ("DiT-S/4", 256): 1.41,
    ("DiT-S/2", 256): 6.06,
    ("DiT-B/8", 256): 1.42,
    ("DiT-B/4", 256): 5.56,
    ("DiT-B/2", 256): 23.01,
    ("DiT-L/8", 256): 5.01,
    ("DiT-L/4", 256): 19.70,
    ("DiT-L/2", 256): 80.71,
    ("DiT-XL/8", 256): 7.39,
    ("DiT-XL/4", 256): 29.05,
    ("DiT-XL/2", 256): 118.64,
    ("DiT-XL/2", 512): 524.60,
}


def model_gflops(
    model: nn.Module,
    input_size: int | None = None,
    in_channels: int | None = None,
    batch: int = 2,
    conditional: bool = True,
) -> float:
    """Forward multiply-accumulates per image / 1e9 (DiT Table 4's "Gflops"), measured, not estimated.

    The model is copied to the meta device (no memory, no compute) and run once on a batch of ``batch`` images
    of shape [in_channels, input_size, input_size] (defaults: the model's own ``input_size`` and
    ``in_channels``) with integer times and labels, under FlopCounterMode and the math SDPA backend.
    FlopCounterMode's total (2 per multiply-add) is divided by 2 x batch.
    """
    input_size = input_size if input_size is not None else getattr(model, "input_size", None)
    in_channels = in_channels if in_channels is not None else getattr(model, "in_channels", None)
    if input_size is None or in_channels is None:
        raise ValueError("model_gflops needs input_size and in_channels (the model does not define them)")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    meta = _meta_copy(model, input_size)
    x = torch.zeros(batch, in_channels, input_size, input_size, device="meta")
    t = torch.zeros(batch, dtype=torch.long, device="meta")
    kwargs = {}
    if conditional and getattr(meta, "num_classes", 0):
        kwargs["y"] = torch.zeros(batch, dtype=torch.long, device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        meta(x, t, **kwargs)
    return counter.get_total_flops() / 2 / batch / 1e9


def _meta_copy(model: nn.Module, input_size: int) -> nn.Module:
    """A meta-device twin of ``model`` (the caller's model is left untouched). A DiT is rebuilt from its
    configuration (no weights are copied, any input size); other modules are deep-copied."""
    from ablate.models.dit import DiT

    if isinstance(model, DiT):
        code = DiT.__init__.__code__
        cfg = {k: getattr(model, k) for k in code.co_varnames[1 : code.co_argcount]}
        with torch.device("meta"):
            return DiT(**dict(cfg, input_size=input_size)).eval()
    if getattr(model, "input_size", input_size) != input_size:
        raise ValueError(f"cannot change input_size of a {type(model).__name__}; pass a model built for it")
    return copy.deepcopy(model).to("meta").eval()


def sample_gflops(model_gflops: float, nfe: int, cfg: bool) -> float:
    """GMACs per generated image: NFE x model_gflops, doubled with classifier-free guidance (two forwards,
    conditional and unconditional, per evaluation)."""
    if nfe < 0:
        raise ValueError(f"nfe must be >= 0, got {nfe}")
    return float(nfe) * model_gflops * (2.0 if cfg else 1.0)


def train_gflops(model_gflops: float, images_seen: int | float) -> float:
    """GMACs of training: 3 x model_gflops x images seen (forward 1x + backward 2x)."""
    if images_seen < 0:
        raise ValueError(f"images_seen must be >= 0, got {images_seen}")
    return 3.0 * model_gflops * float(images_seen)


def table4() -> list[dict]:
    """Measured GFLOPs of the 12 DiT configurations (+ XL/2 at 512 px) next to DiT Table 4."""
    from ablate.models import build_model

    rows = []
    for (name, resolution), paper in DIT_TABLE4_GFLOPS.items():
        with torch.device("meta"):
            model = build_model(name, input_size=resolution // 8)  # SD VAE latents: 8x downsampling
        measured = model_gflops(model)
        rows.append(
            dict(
                model=name,
                resolution=resolution,
                paper=paper,
                measured=measured,
                rel_err=measured / paper - 1.0,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Forward GMACs per image of the DiT presets vs DiT Table 4.")
    ap.parse_args(argv)
    rows = table4()
    print(f"{'model':<10} {'res':>4} {'paper':>9} {'measured':>10} {'rel.err':>8}")
    for r in rows:
        print(
            f"{r['model']:<10} {r['resolution']:>4} {r['paper']:>9.2f} {r['measured']:>10.3f} "
            f"{100 * r['rel_err']:>7.2f}%"
        )
    worst = max(abs(r["rel_err"]) for r in rows)
    print(f"worst relative error: {100 * worst:.3f}% (tolerance 0.5%)")


if __name__ == "__main__":
    main()
