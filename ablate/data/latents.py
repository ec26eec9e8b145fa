"""VAE latents precomputed once from an image dataset (the latent-space setting of DiT and SiT).

DiT/SiT train in the latent space of Stable Diffusion's KL-f8 autoencoder (``stabilityai/sd-vae-ft-ema`` or
``-mse``): ``z = 0.18215 * E(x)`` with ``E(x)`` a draw from the encoder's diagonal Gaussian posterior
(DiT ``train.py``: ``vae.encode(x).latent_dist.sample().mul_(0.18215)``), and samples are decoded as
``D(z / 0.18215)``. 0.18215 is the SD-v1 ``scaling_factor`` that gives the latents roughly unit variance.

Flip augmentation. DiT flips the *image* (p = 0.5) and encodes it on the fly. A VAE is not flip-equivariant,
so flipping a latent is not the same as encoding a flipped image. :func:`encode_latents` therefore encodes
**both** the image and its mirror once (``latents[N, 2, C, h, w]``, index 1 = flipped), and
:class:`LatentDataset` picks one of the two with probability 1/2 per access: the same augmentation
distribution as DiT's, at twice the storage. (The one difference from on-the-fly encoding: the posterior
draw is frozen at extraction time; ``posterior="mean"`` stores the mode instead.)

File format (``torch.save``): a dict with ``latents`` (float32 ``[N, F, C, h, w]``, F = 2 with flips else 1,
already multiplied by ``scale``), ``labels`` (int64 ``[N]``), ``scale``, ``vae`` (name or path),
``posterior``, ``seed``, ``image_size``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

__all__ = ["LATENT_SCALE", "VAE_ALIASES", "LatentDataset", "decode_latents", "encode_latents", "load_vae"]

LATENT_SCALE = 0.18215
VAE_ALIASES = {"ema": "stabilityai/sd-vae-ft-ema", "mse": "stabilityai/sd-vae-ft-mse"}
POSTERIORS = ("sample", "mean")


def load_vae(name_or_path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Load a diffusers ``AutoencoderKL`` from a local directory or the local HF cache, never the network.

    ``name_or_path``: a directory written by ``save_pretrained`` (``config.json`` + weights), a hub id already
    in the HF cache (``stabilityai/sd-vae-ft-ema``), or an alias in :data:`VAE_ALIASES` (``ema``, ``mse``).
    """
    try:
        from diffusers import AutoencoderKL
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("VAE latents need diffusers: pip install 'ablate[vae]'") from e
    name = VAE_ALIASES.get(str(name_or_path), str(name_or_path))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a diffusers AutoencoderKL directory (no config.json); "
                                    "expected what AutoencoderKL.save_pretrained writes")
        vae = AutoencoderKL.from_pretrained(path)
    else:
        try:
            vae = AutoencoderKL.from_pretrained(name, local_files_only=True)
        except (OSError, ValueError) as e:
            cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
            raise FileNotFoundError(
                f"VAE {name!r} is neither a local directory nor in the local Hugging Face cache ({cache}); "
                "ablate never downloads at run time. On a machine with network run "
                f"`huggingface-cli download {name}` (then copy the cache) or "
                f"`AutoencoderKL.from_pretrained({name!r}).save_pretrained(DIR)`, and pass vae=DIR "
                f"(with config.json + diffusion_pytorch_model.safetensors). Aliases: {VAE_ALIASES}"
            ) from e
    return vae.to(device).eval().requires_grad_(False)


@torch.no_grad()
def encode_latents(dataset: Dataset, vae, out_path: str | os.PathLike, batch_size: int = 32,
                   flips: bool = True, posterior: str = "sample", scale: float = LATENT_SCALE, seed: int = 0,
                   device: str | torch.device = "cpu", overwrite: bool = False) -> Path:
    """Encode every image of ``dataset`` once and write the latent file (see module docstring).

    ``dataset`` yields ``(image [3, H, W] in [-1, 1], label)`` *without* random flips (e.g.
    ``ImageFolderDataset(..., flip_p=0)``). ``vae`` is an ``AutoencoderKL`` or anything :func:`load_vae`
    accepts. If ``out_path`` exists it is reused (checked to come from the same VAE/posterior/scale/flips)
    unless ``overwrite``.
    """
    if posterior not in POSTERIORS:
        raise ValueError(f"posterior must be one of {POSTERIORS}, got {posterior!r}")
    if getattr(dataset, "flip_p", 0.0):
        raise ValueError(f"dataset applies random flips (flip_p={dataset.flip_p}); pass flip_p=0: "
                         "encode_latents stores both flips itself")
    vae_name = str(vae) if isinstance(vae, (str, os.PathLike)) else getattr(vae, "name_or_path", None) or \
        getattr(getattr(vae, "config", None), "_name_or_path", "") or type(vae).__name__
    meta = {"vae": vae_name, "posterior": posterior, "scale": scale, "flips": 2 if flips else 1, "seed": seed}
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        old = torch.load(out_path, map_location="cpu", weights_only=True)
        diff = {k: (old.get(k), v) for k, v in meta.items() if k != "flips" and old.get(k) != v}
        if old["latents"].shape[1] != meta["flips"]:
            diff["flips"] = (old["latents"].shape[1], meta["flips"])
        if diff:
            raise ValueError(f"{out_path} exists but was written with different settings {diff} "
                             "(old, new); pass overwrite=True or another out_path")
        return out_path
    if isinstance(vae, (str, os.PathLike)):
        vae = load_vae(vae, device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    chunks, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        views = [x, x.flip(-1)] if flips else [x]
        zs = []
        for v in views:
            dist = vae.encode(v.to(device)).latent_dist
            if posterior == "mean":
                z = dist.mean
            else:  # mean + std * eps with our own seeded eps (device-independent draw)
                z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen).to(dist.mean)
            zs.append((z * scale).float().cpu())
        chunks.append(torch.stack(zs, dim=1))
        labels.append(torch.as_tensor(y, dtype=torch.int64))
    if not chunks:
        raise ValueError("dataset is empty: nothing to encode")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    torch.save({"latents": torch.cat(chunks), "labels": torch.cat(labels), **meta,
                "image_size": int(chunks[0].shape[-1])}, tmp)
    os.replace(tmp, out_path)  # atomic: a concurrent reader never sees half a file
    return out_path


@torch.no_grad()
def decode_latents(vae, z: Tensor, scale: float = LATENT_SCALE) -> Tensor:
    """Images in (roughly) [-1, 1] from scaled latents: ``D(z / scale)`` (DiT ``sample.py``)."""
    return vae.decode(z / scale).sample


class LatentDataset(Dataset):
    """Reads a file written by :func:`encode_latents`: ``(latent [C, h, w], label)``.

    ``flip``: with two stored views, pick the mirrored one with probability 1/2 (True, training) or always the
    unflipped one (False). ``generator`` makes the choice reproducible.
    """

    def __init__(self, path: str | os.PathLike, flip: bool = True, generator: torch.Generator | None = None):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"latent file {path} does not exist; write it once with "
                                    "ablate.data.encode_latents(dataset, vae, out_path)")
        d = torch.load(path, map_location="cpu", weights_only=True)
        self.latents, self.labels = d["latents"], d["labels"]
        self.scale, self.vae, self.posterior = d["scale"], d["vae"], d["posterior"]
        self.flip, self.generator = flip, generator

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.latents.shape[2:])

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        view = 0
        if self.flip and self.latents.shape[1] == 2:
            view = int(torch.rand((), generator=self.generator) < 0.5)
        return self.latents[i, view], int(self.labels[i])
