"""Data: embedded offline datasets, ADM-style image folders and precomputed VAE latents.

Every dataset yields ``(x, label)`` with ``x`` a float32 ``[C, H, W]`` tensor (images in [-1, 1]; latents
already multiplied by 0.18215) and ``label`` an int. See ``ablate/data/README.md``.
"""

from .embedded import (
    DATASETS,
    SPLITS,
    DatasetInfo,
    TensorImageDataset,
    build_dataset,
    dataset_info,
    from_uint8,
    stratified_split,
    to_uint8,
)
from .image_folder import ImageFolderDataset, center_crop_arr
from .latents import LATENT_SCALE, LatentDataset, decode_latents, encode_latents, load_vae
from .specs import DataSpec, EmbeddedData, ImageFolderData, LatentData


def prepare_fashion_mnist(root=None, deb=None):
    """Unpack the Debian package ``dataset-fashion-mnist`` once (see :mod:`ablate.data.fashion`)."""
    # lazy import: keeps `python -m ablate.data.fashion` free of a runpy warning
    from .fashion import prepare_fashion_mnist as _prepare

    return _prepare(root, deb)


__all__ = [
    "DATASETS",
    "DataSpec",
    "EmbeddedData",
    "ImageFolderData",
    "LatentData",
    "SPLITS",
    "LATENT_SCALE",
    "DatasetInfo",
    "ImageFolderDataset",
    "LatentDataset",
    "TensorImageDataset",
    "build_dataset",
    "center_crop_arr",
    "dataset_info",
    "decode_latents",
    "encode_latents",
    "from_uint8",
    "load_vae",
    "prepare_fashion_mnist",
    "stratified_split",
    "to_uint8",
]
