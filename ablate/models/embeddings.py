"""DiT's embeddings (Peebles & Xie 2023, sec. 3.1-3.2): patchify, fixed 2-D sin-cos positions, the sinusoidal
timestep embedding with its MLP, class labels with the null class of classifier-free guidance, and the adaLN
modulation. Names and parameter shapes follow the official ``models.py`` (see :mod:`ablate.models.dit`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["modulate", "timestep_embedding", "sincos_pos_embed_2d", "PatchEmbed", "TimestepEmbedder", "LabelEmbedder"]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation x (1 + gamma) + beta, per sample (DiT sec. 3.2); one fused kernel (addcmul)."""
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))


# ----------------------------------------------------------------------------------------------------------
# Fixed embeddings
# ----------------------------------------------------------------------------------------------------------


def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0, dtype=None) -> Tensor:
    """Sinusoidal embedding of a (possibly fractional) time, cosines first (Vaswani et al. 2017, sec. 3.5;
    the GLIDE/ADM ordering used by DiT):

    .. math::
        e(t) = [\\cos(t f_0), ..., \\cos(t f_{h-1}), \\sin(t f_0), ..., \\sin(t f_{h-1})],\\quad
        f_i = \\exp(-\\ln(\\text{max\\_period})\\, i / h),\\ h = \\lfloor dim/2 \\rfloor

    (a zero column is appended when ``dim`` is odd). Computed in ``dtype`` (float32 by default, as the
    official code does; float64 for a float64 model).
    """
    if t.ndim != 1:
        raise ValueError(f"t must be a 1-D tensor of shape [B], got shape {tuple(t.shape)}")
    dtype = torch.float32 if dtype is None else dtype
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def sincos_pos_embed_2d(dim: int, grid_size: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding [grid_size**2, dim] (MAE, He et al. 2022; DiT sec. 3.1), float64.

    Tokens are in row-major order (row i, column j). The first half of the channels encodes the column j, the
    second half the row i (the MAE/DiT layout); each half is [sin(pos w_k), cos(pos w_k)] with
    w_k = 10000^(-k / (dim/4)), k = 0..dim/4-1.
    """
    if dim % 4:
        raise ValueError(f"hidden size {dim} must be a multiple of 4 for the 2-D sin-cos position embedding")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    pos = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def one_axis(p: Tensor) -> Tensor:
        out = p.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    return torch.cat([one_axis(cols), one_axis(rows)], dim=1)


# ----------------------------------------------------------------------------------------------------------
# Embedders
# ----------------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Patchify [B, C, H, W] -> [B, (H/p)(W/p), D] with a stride-p convolution (official name ``proj``)."""

    def __init__(self, input_size: int, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not divisible by patch_size {patch_size}")
        self.input_size, self.patch_size = input_size, patch_size
        self.grid_size = input_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"input spatial size {tuple(x.shape[-2:])} != model input_size {self.input_size}"
            )
        # The stride-p convolution as one matmul on [B, T, C p p] patches: same weights and result as
        # proj(x).flatten(2).transpose(1, 2), but the tokens come out contiguous in [B, T, D] (the transposed
        # conv layout would propagate through every later elementwise op and force copies before each
        # LayerNorm and linear).
        B, C, H, W = x.shape
        g, p = self.grid_size, self.patch_size
        patches = x.reshape(B, C, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * p * p)
        return F.linear(patches, self.proj.weight.reshape(self.proj.out_channels, -1), self.proj.bias)


class TimestepEmbedder(nn.Module):
    """t -> MLP(sinusoidal(t)): 256 frequencies, max period 10000, Linear-SiLU-Linear (DiT sec. 3.2)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.max_period = max_period
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: Tensor) -> Tensor:
        w = self.mlp[0].weight
        # float64 models embed in float64; lower precisions embed in float32 like the official code.
        dtype = torch.float64 if w.dtype == torch.float64 else torch.float32
        emb = timestep_embedding(t, self.frequency_embedding_size, self.max_period, dtype=dtype)
        return self.mlp(emb.to(w.dtype))


class LabelEmbedder(nn.Module):
    """Class label -> embedding, with class dropout for classifier-free guidance (DiT sec. 3.2; Ho &
    Salimans 2022). Row ``num_classes`` of the table is the learned null class; it exists iff
    ``dropout_prob > 0`` (as in the official code, so official tables have ``num_classes + 1`` rows)."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"LabelEmbedder needs num_classes >= 1, got {num_classes}")
        if not 0.0 <= dropout_prob < 1.0:
            raise ValueError(f"class dropout probability must lie in [0, 1), got {dropout_prob}")
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    @property
    def null_class(self) -> int:
        """Index of the unconditional ("null") label: ``num_classes``."""
        return self.num_classes

    def token_drop(self, labels: Tensor, force_drop_ids: Tensor | None = None) -> Tensor:
        """Replace labels by the null class with probability ``dropout_prob`` (or where force_drop_ids==1)."""
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids == 1
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: Tensor, train: bool, force_drop_ids: Tensor | None = None) -> Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            if self.dropout_prob == 0:
                raise ValueError(
                    "force_drop_ids needs a null class: build the model with class_dropout_prob > 0"
                )
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)
