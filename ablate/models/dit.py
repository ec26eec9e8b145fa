"""DiT: the diffusion transformer backbone with adaLN-Zero blocks (Peebles & Xie 2023, "Scalable Diffusion
Models with Transformers", sec. 3.2 and fig. 3).

Written from the paper; module and parameter names follow the official DiT (facebookresearch/DiT) and SiT
(willisma/SiT) ``models.py`` exactly, so their state dicts load without renaming:

=============================  =================================================================
``x_embedder.proj``            patchify: Conv2d(C, D, kernel = stride = p)            (sec. 3.1)
``pos_embed``                  fixed 2-D sin-cos positions, [1, T, D], not trained    (sec. 3.1)
``t_embedder.mlp.{0,2}``       timestep: 256 sinusoidal frequencies -> Linear, SiLU, Linear
``y_embedder.embedding_table`` class labels, row ``num_classes`` = the null class (CFG)
``blocks.i.attn.{qkv,proj}``   multi-head self-attention, qkv bias
``blocks.i.mlp.{fc1,fc2}``     MLP, ratio 4, GELU (tanh approximation)
``blocks.i.adaLN_modulation.1`` c -> (shift, scale, gate) x (attention, MLP): adaLN-Zero
``final_layer.*``              adaLN (shift, scale), then Linear D -> p*p*C_out
=============================  =================================================================

A DiT block (paper fig. 3, adaLN-Zero), with c = t_emb + y_emb and LN without affine parameters (eps 1e-6):

.. math::
    x \\leftarrow x + \\alpha_1 \\odot \\mathrm{Attn}(\\mathrm{LN}(x)(1 + \\gamma_1) + \\beta_1),\\qquad
    x \\leftarrow x + \\alpha_2 \\odot \\mathrm{MLP}(\\mathrm{LN}(x)(1 + \\gamma_2) + \\beta_2)

with (beta_1, gamma_1, alpha_1, beta_2, gamma_2, alpha_2) = Linear(SiLU(c)), zero-initialised so that every
block starts as the identity. The output layer is also zero-initialised (the network starts by predicting 0).
Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels
on GPU, the fused CPU kernel on CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import (  # noqa: F401 (re-exported: the official names live in models.py)
    LabelEmbedder,
    PatchEmbed,
    TimestepEmbedder,
    modulate,
    sincos_pos_embed_2d,
    timestep_embedding,
)

__all__ = [
    "DiT",
    "DiTBlock",
    "FinalLayer",
    "TimestepEmbedder",
    "LabelEmbedder",
    "PatchEmbed",
    "Attention",
    "Mlp",
    "timestep_embedding",
    "sincos_pos_embed_2d",
]


# ----------------------------------------------------------------------------------------------------------
# Transformer blocks
# ----------------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention softmax(q k^T / sqrt(d_h)) v with one fused qkv projection (with bias)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        # Split q, k, v with unbind on the [B, T, 3, heads, d_h] view (not qkv[0], qkv[1], qkv[2] after a
        # permute): its backward is a single stack written straight into the qkv gradient's layout, where
        # indexing zero-fills three full-size buffers and the permuted layout needs one more copy.
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, D // self.num_heads).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # CPU bf16 autocast: torch's bf16 flash-attention backward on CPU is ~15x slower than fp32 at DiT's
            # shapes (measured: 40% of a tiny-8 step); attention is a small share of the FLOPs: run it in fp32
            # (outside autocast, which would cast it back to bf16).
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))


class Mlp(nn.Module):
    """fc1 -> GELU (tanh approximation) -> fc2 (official names ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block (DiT fig. 3, right); see the module docstring for the equations."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.hidden_size = hidden_size
        self.attn = Attention(hidden_size, num_heads)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def _norm(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.hidden_size,), eps=1e-6)  # LN without affine parameters

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(
            6, dim=1
        )
        x = torch.addcmul(x, gate_msa.unsqueeze(1), self.attn(modulate(self._norm(x), shift_msa, scale_msa)))
        x = torch.addcmul(x, gate_mlp.unsqueeze(1), self.mlp(modulate(self._norm(x), shift_mlp, scale_mlp)))
        return x


class FinalLayer(nn.Module):
    """adaLN (shift, scale; no gate) then Linear D -> p*p*C_out (DiT sec. 3.2, "Transformer decoder")."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(F.layer_norm(x, (self.hidden_size,), eps=1e-6), shift, scale))


# ----------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------


class DiT(nn.Module):
    """Diffusion transformer (Peebles & Xie 2023), a drop-in for the official DiT/SiT ``models.py`` classes.

    Args:
        input_size: spatial size H = W of the (latent) image.
        patch_size: p; the sequence has T = (input_size / p)^2 tokens.
        in_channels: C of the input.
        hidden_size, depth, num_heads, mlp_ratio: width D, number of blocks, heads, MLP ratio.
        class_dropout_prob: probability of replacing a label by the null class in training (CFG).
        num_classes: number of classes; the null class is index ``num_classes``. ``0`` = unconditional
            (no label embedder; ``y`` must be None).
        learn_sigma: the output has 2 C channels (prediction, then the learned-variance interpolation v of
            Nichol & Dhariwal 2021) instead of C.
        return_sigma: with learn_sigma, whether ``forward`` returns all 2 C channels (DiT) or only the first C
            (SiT's checkpoints carry a variance head they do not use).
    """

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
        return_sigma: bool = True,
    ):
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}")
        self.input_size, self.patch_size, self.in_channels = input_size, patch_size, in_channels
        self.hidden_size, self.depth, self.num_heads, self.mlp_ratio = (
            hidden_size,
            depth,
            num_heads,
            mlp_ratio,
        )
        self.num_classes, self.class_dropout_prob = num_classes, class_dropout_prob
        self.learn_sigma, self.return_sigma = learn_sigma, return_sigma
        self.out_channels = 2 * in_channels if learn_sigma else in_channels

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = (
            LabelEmbedder(num_classes, hidden_size, class_dropout_prob) if num_classes > 0 else None
        )
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.x_embedder.num_patches, hidden_size), requires_grad=False
        )
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    @property
    def null_class(self) -> int | None:
        """The label index that means "no class" (``num_classes``), or None when there is no null class."""
        return self.num_classes if self.y_embedder is not None and self.class_dropout_prob > 0 else None

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """DiT initialisation: Xavier-uniform linears (zero bias), patch conv as a linear, N(0, 0.02) label
        table and timestep MLP, fixed sin-cos positions, and zeros for every adaLN modulation and the output
        linear (adaLN-Zero, DiT sec. 3.2)."""
        if self.pos_embed.is_meta:
            return  # shapes only (parameter counting, FLOPs)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.pos_embed.copy_(sincos_pos_embed_2d(self.hidden_size, self.x_embedder.grid_size).unsqueeze(0))
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for layer in [b.adaLN_modulation[-1] for b in self.blocks] + [self.final_layer.adaLN_modulation[-1]]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: Tensor) -> Tensor:
        """[B, T, p*p*C_out] -> [B, C_out, H, W] (token (h, w), channels ordered (p, q, c) as officially)."""
        B, p, g, c = x.shape[0], self.patch_size, self.x_embedder.grid_size, self.out_channels
        x = x.reshape(B, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(B, c, g * p, g * p)

    def _time(self, t: Tensor | float | int, batch: int, device) -> Tensor:
        t = torch.as_tensor(t, device=device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must be a scalar or have shape [{batch}], got {tuple(t.shape)}")
        return t

    def embed_condition(self, t: Tensor, y: Tensor | None, force_drop_ids: Tensor | None = None) -> Tensor:
        """c = t_emb(t) + y_emb(y). ``y=None`` means the null class (or no label when unconditional)."""
        c = self.t_embedder(t)
        if self.y_embedder is None:
            if y is not None:
                raise ValueError("this model is unconditional (num_classes=0): pass y=None")
            return c
        if y is None:
            if self.null_class is None:
                raise ValueError("y=None needs a null class: build the model with class_dropout_prob > 0")
            y = torch.full((t.shape[0],), self.null_class, dtype=torch.long, device=t.device)
        return c + self.y_embedder(y, self.training, force_drop_ids)

    def forward(
        self, x: Tensor, t: Tensor, y: Tensor | None = None, force_drop_ids: Tensor | None = None
    ) -> Tensor:
        """x: [B, C, H, W]; t: [B] (or a scalar) in whatever units the time axis feeds (DiT: the integer index
        0..999; SiT: its own t in [0, 1]); y: [B] labels in [0, num_classes] or None.
        Returns [B, C_out, H, W]."""
        B = x.shape[0]
        t = self._time(t, B, x.device)
        h = self.x_embedder(x) + self.pos_embed
        c = self.embed_condition(t, y, force_drop_ids)
        for block in self.blocks:
            h = block(h, c)
        out = self.unpatchify(self.final_layer(h, c))
        if self.learn_sigma and not self.return_sigma:
            out = out[:, : self.in_channels]
        return out

    def forward_with_cfg(
        self, x: Tensor, t: Tensor, y: Tensor, cfg_scale: float, guided_channels: int | None = None
    ) -> Tensor:
        """The official classifier-free-guidance forward (Ho & Salimans 2022, eq. 6), for batches laid out as
        [conditional half; unconditional half] (``y`` second half = the null class). The first half of ``x``
        is evaluated twice and, on the first ``guided_channels`` output channels,

        .. math:: \\hat\\epsilon = \\epsilon_\\emptyset + s (\\epsilon_y - \\epsilon_\\emptyset)

        is written into both halves; the remaining channels (e.g. the learned variance) pass through unguided.
        ``guided_channels=None`` guides all ``in_channels`` (the standard rule); ``guided_channels=3``
        reproduces the official repositories' legacy rule (guidance on three channels only, kept there for
        exact reproducibility of their numbers)."""
        if x.shape[0] % 2:
            raise ValueError(f"forward_with_cfg needs an even batch [cond; uncond], got {x.shape[0]}")
        k = self.in_channels if guided_channels is None else guided_channels
        if not 0 < k <= self.in_channels:
            raise ValueError(f"guided_channels must lie in 1..{self.in_channels}, got {guided_channels}")
        half = x[: x.shape[0] // 2]
        out = self.forward(torch.cat([half, half]), t, y)
        eps, rest = out[:, :k], out[:, k:]
        cond, uncond = eps.chunk(2)
        guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([guided, guided]), rest], dim=1)
