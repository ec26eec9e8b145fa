"""ADM-format ``.npz`` files: sample export, streaming reads, and reference batches.

**Sample batches.** guided-diffusion's evaluator (``evaluations/evaluator.py``) reads ``arr_0``: uint8
``[N, H, W, 3]`` (NHWC, RGB). Its sampling scripts save ``np.savez(path, arr, label_arr)``, so the class labels
are ``arr_1`` (int64 ``[N]``); the evaluator ignores them. :class:`AdmNpzWriter` writes the same layout (a zip
of ``arr_0.npy`` and ``arr_1.npy``, stored uncompressed, zip64, as ``np.savez`` does) batch by batch, so 50K
images at 256x256 (9.8 GB) never have to be held in memory.

**Pixel conversion** (:func:`samples_to_uint8`, float ``[N, C, H, W]`` in ``[-1, 1]``):

* ``"dit"`` (default): ``torch.clamp(127.5 * x + 128.0, 0, 255).to(torch.uint8)`` in float32, the two
  elementwise ops of DiT's and SiT's ``sample_ddp.py`` (the scripts behind the DiT/SiT FID-50K numbers);
  the cast truncates, so this is ``floor(127.5 x + 128)``, i.e. ``(x + 1) * 127.5`` rounded half up.
* ``"adm"``: ``((x + 1) * 127.5).clamp(0, 255).to(torch.uint8)``, guided-diffusion's ``image_sample.py``:
  truncation of ``(x + 1) * 127.5``, on average half a grey level darker than ``"dit"``.

(``ablate.data.embedded.to_uint8`` rounds half to even; it differs from ``"dit"`` only on exact halves.)
Inputs are cast to float32 first (DiT's decoded samples are float32). NaN raises: it would become a pixel
value silently. Grayscale images (``C == 1``) are repeated to 3 channels, since the evaluator's Inception
takes RGB; ``C`` must be 1 or 3.

**Reference batches** (``VIRTUAL_imagenet256_labeled.npz`` and the other ADM reference batches): which key
feeds which metric is :data:`REFERENCE_KEYS`; :class:`AdmReference` checks a key exists (and its shape) only
when a metric needs it, and names the file, the key and the metric when it does not.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["CONVERSIONS", "IMAGES_KEY", "LABELS_KEY", "REFERENCE_KEYS", "AdmNpzWriter", "AdmReference",
           "MissingNpzKey", "iter_npz_batches", "load_adm_reference", "merge_adm_npz", "npz_array_header", "npz_keys",
           "read_adm_npz", "samples_to_uint8", "save_adm_npz"]

IMAGES_KEY = "arr_0"
LABELS_KEY = "arr_1"
CONVERSIONS = ("dit", "adm")

#: metric -> the reference batch's keys it reads (ADM's evaluator: ``read_statistics`` and ``read_activations``)
REFERENCE_KEYS = {
    "fid": ("mu", "sigma"),            # ImageNet-train pool_3 statistics, 2048 and 2048 x 2048
    "sfid": ("mu_s", "sigma_s"),       # ImageNet-train mixed_6/conv[..., :7] statistics, 2023 and 2023 x 2023
    "precision": (IMAGES_KEY,),        # 10,000 reference images: their pool_3 features span the real manifold
    "recall": (IMAGES_KEY,),
}
_DIMS = {"mu": 2048, "sigma": 2048, "mu_s": 2023, "sigma_s": 2023}


# ----------------------------------------------------------------------------------------------------------
# Pixel conversion
# ----------------------------------------------------------------------------------------------------------


def samples_to_uint8(x: Tensor, conversion: str = "dit") -> Tensor:
    """Float samples ``[N, C, H, W]`` in ``[-1, 1]`` -> uint8 NHWC ``[N, H, W, 3]`` (see the module docstring).

    A uint8 ``[N, C, H, W]`` tensor is taken as already converted (only transposed / grey repeated)."""
    if conversion not in CONVERSIONS:
        raise ValueError(f"conversion={conversion!r}; valid choices: {CONVERSIONS}")
    if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected a tensor [N, C, H, W] with C in (1, 3), got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    if x.dtype != torch.uint8:
        if not torch.is_floating_point(x):
            raise TypeError(f"expected float samples in [-1, 1] or uint8, got dtype {x.dtype}")
        x = x.float()
        bad = torch.isnan(x).sum().item()
        if bad:
            raise ValueError(f"samples contain {bad} NaN values (a diverged sampler?); refusing to write them as "
                             "pixels")
        if conversion == "dit":
            x = torch.clamp(127.5 * x + 128.0, 0, 255).to(torch.uint8)
        else:
            x = ((x + 1) * 127.5).clamp(0, 255).to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).contiguous()


def _as_nhwc_uint8(images, conversion: str) -> np.ndarray:
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"a numpy batch must be uint8 [N, H, W, 3] (NHWC), got {images.dtype} {images.shape}")
        return np.ascontiguousarray(images)
    return samples_to_uint8(images, conversion).cpu().numpy()


# ----------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------


def _npy_header(shape: tuple[int, ...], dtype) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
    return buf.getvalue()


class AdmNpzWriter:
    """Stream samples into an ADM-format ``.npz`` (``arr_0`` uint8 NHWC, ``arr_1`` int64 labels).

    ``num_images`` known in advance: images go straight into the zip member (the ``.npy`` header needs the
    final shape). Unknown: they are spooled to ``<path>.arr_0.raw`` and copied in at :meth:`close`. The file
    is written as ``<path>.partial`` and renamed on success; on an exception inside ``with`` it is removed.
    A count different from ``num_images`` at close raises. Labels are optional but all-or-none per batch.

    >>> with AdmNpzWriter("samples.npz", num_images=50_000) as w:   # doctest: +SKIP
    ...     for x, y in batches:                                    # x: float [B, C, H, W] in [-1, 1]
    ...         w.write(x, y)
    """

    def __init__(self, path: str | os.PathLike, num_images: int | None = None, *, conversion: str = "dit"):
        if conversion not in CONVERSIONS:
            raise ValueError(f"conversion={conversion!r}; valid choices: {CONVERSIONS}")
        self.path = Path(path)
        self.num_images, self.conversion = num_images, conversion
        self.count = 0
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self._raw_path = self.path.with_name(self.path.name + ".arr_0.raw")
        self._zip: zipfile.ZipFile | None = None
        self._member = None
        self._raw = None
        self._hw: tuple[int, int] | None = None
        self._labels: list[np.ndarray] = []
        self._with_labels: bool | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> AdmNpzWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, images, labels=None) -> None:
        """Append a batch: float ``[B, C, H, W]`` in [-1, 1], uint8 ``[B, C, H, W]``, or numpy uint8 NHWC."""
        u8 = _as_nhwc_uint8(images, self.conversion)
        n, h, w = u8.shape[:3]
        if self._hw is None:
            self._hw = (h, w)
            self._open()
        elif (h, w) != self._hw:
            raise ValueError(f"image size {h}x{w} differs from the first batch's {self._hw[0]}x{self._hw[1]}")
        if self.num_images is not None and self.count + n > self.num_images:
            raise ValueError(f"{self.count + n} images written, more than num_images={self.num_images}")
        has = labels is not None
        if self._with_labels is None:
            self._with_labels = has
        elif has != self._with_labels:
            raise ValueError("labels must be given for every batch or for none")
        if has:
            lab = np.asarray(labels.detach().cpu() if torch.is_tensor(labels) else labels).astype(np.int64).reshape(-1)
            if len(lab) != n:
                raise ValueError(f"{len(lab)} labels for {n} images")
            self._labels.append(lab)
        (self._member if self._member is not None else self._raw).write(u8.tobytes())
        self.count += n

    def _open(self) -> None:
        self._zip = zipfile.ZipFile(self._tmp, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)
        if self.num_images is not None:
            self._member = self._zip.open(f"{IMAGES_KEY}.npy", mode="w", force_zip64=True)
            self._member.write(_npy_header((self.num_images, *self._hw, 3), np.uint8))
        else:
            self._raw = open(self._raw_path, "wb")  # noqa: SIM115 (closed in close/abort)

    def close(self) -> Path:
        """Finish the file (labels, header) and move it into place; returns its path."""
        if self._hw is None:
            raise ValueError(f"no images were written to {self.path}")
        if self.num_images is not None and self.count != self.num_images:
            self.abort()
            raise ValueError(f"{self.count} images written, num_images={self.num_images} announced; "
                             f"{self.path} was not written")
        if self._member is not None:
            self._member.close()
        else:
            self._raw.close()
            with self._zip.open(f"{IMAGES_KEY}.npy", mode="w", force_zip64=True) as m:
                m.write(_npy_header((self.count, *self._hw, 3), np.uint8))
                with open(self._raw_path, "rb") as src:
                    shutil.copyfileobj(src, m, length=64 << 20)
            self._raw_path.unlink()
        if self._with_labels:
            with self._zip.open(f"{LABELS_KEY}.npy", mode="w", force_zip64=True) as m:
                np.lib.format.write_array(m, np.concatenate(self._labels), allow_pickle=False)
        self._zip.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Discard everything written so far."""
        for f in (self._member, self._raw, self._zip):
            try:
                if f is not None:
                    f.close()
            except Exception:  # noqa: BLE001 - best effort on an already failing path
                pass
        for p in (self._tmp, self._raw_path):
            p.unlink(missing_ok=True)


def save_adm_npz(path: str | os.PathLike, images, labels=None, *, conversion: str = "dit",
                 batch_size: int = 1024) -> Path:
    """Write samples (float ``[N, C, H, W]`` in [-1, 1], uint8 NCHW, or numpy uint8 NHWC) and optional labels as
    an ADM-format ``.npz`` (see :class:`AdmNpzWriter`), converting ``batch_size`` images at a time."""
    n = len(images)
    with AdmNpzWriter(path, num_images=n, conversion=conversion) as w:
        for i in range(0, n, batch_size):
            w.write(images[i : i + batch_size], None if labels is None else labels[i : i + batch_size])
    return Path(path)


def merge_adm_npz(path: str | os.PathLike, parts, *, batch_size: int = 1024) -> Path:
    """Concatenate ADM-format sample files (e.g. one per rank, in rank order) into one, streaming; labels are
    kept if every part has them. The parts are left in place."""
    parts = [Path(p) for p in parts]
    if not parts:
        raise ValueError("no parts to merge")
    n = sum(npz_array_header(p, IMAGES_KEY)[0][0] for p in parts)
    with_labels = all(LABELS_KEY in npz_keys(p) for p in parts)
    with AdmNpzWriter(path, num_images=n) as w:
        for p in parts:
            labels = np.load(p)[LABELS_KEY] if with_labels else None
            i = 0
            for b in iter_npz_batches(p, batch_size, IMAGES_KEY):
                w.write(b, None if labels is None else labels[i : i + len(b)])
                i += len(b)
    return Path(path)


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------


def npz_keys(path: str | os.PathLike) -> list[str]:
    """The array names in an ``.npz`` (without opening any array)."""
    with zipfile.ZipFile(path) as z:
        return [n[: -len(".npy")] for n in z.namelist() if n.endswith(".npy")]


def _read_exact(f, size: int) -> np.ndarray:
    """``size`` bytes from a file object into a new (writable) uint8 array."""
    buf = np.empty(size, dtype=np.uint8)
    view, got = memoryview(buf), 0
    while got < size:
        k = f.readinto(view[got:])
        if not k:
            raise ValueError(f"unexpected end of array data: expected {size} bytes, got {got}")
        got += k
    return buf


def _open_member(z: zipfile.ZipFile, path, key: str):
    name = f"{key}.npy"
    if name not in z.namelist():
        raise MissingNpzKey(f"{path}: no array {key!r} (keys: {sorted(npz_keys(path))})")
    f = z.open(name)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        return f, None
    return f, (tuple(shape), fortran, dtype)


def npz_array_header(path: str | os.PathLike, key: str = IMAGES_KEY) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array of an ``.npz``, read from its header only."""
    with zipfile.ZipFile(path) as z:
        f, hdr = _open_member(z, path, key)
        f.close()
    if hdr is None:
        a = np.load(path)[key]
        return a.shape, a.dtype
    return hdr[0], hdr[2]


def iter_npz_batches(path: str | os.PathLike, batch_size: int, key: str = IMAGES_KEY) -> Iterator[np.ndarray]:
    """Yield ``key`` in consecutive row batches without loading the whole array (the 50K-sample case)."""
    with zipfile.ZipFile(path) as z:
        f, hdr = _open_member(z, path, key)
        with f:
            if hdr is None or hdr[1] or hdr[2].hasobject:  # rare layouts: load once
                a = np.load(path)[key]
                for i in range(0, len(a), batch_size):
                    yield a[i : i + batch_size]
                return
            shape, _, dtype = hdr
            row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            for i in range(0, shape[0], batch_size):
                n = min(batch_size, shape[0] - i)
                yield _read_exact(f, n * row).view(dtype).reshape(n, *shape[1:])


def read_adm_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """``(arr_0, arr_1 or None)`` of a samples file, fully loaded."""
    with np.load(path) as z:
        return z[IMAGES_KEY], (z[LABELS_KEY] if LABELS_KEY in z.files else None)


# ----------------------------------------------------------------------------------------------------------
# Reference batches
# ----------------------------------------------------------------------------------------------------------


class MissingNpzKey(KeyError):
    """An ``.npz`` lacks a key (for a reference batch, the message names the file, the key and the metric)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class AdmReference:
    """An ADM reference batch (e.g. ``VIRTUAL_imagenet256_labeled.npz``): ``mu``/``sigma`` (FID),
    ``mu_s``/``sigma_s`` (sFID), ``arr_0`` (precision/recall). Keys are checked when a metric asks for them."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"reference batch {self.path} does not exist (ADM's are downloaded from "
                                    "openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/)")
        self.keys = frozenset(npz_keys(self.path))

    def require(self, metric: str) -> None:
        """Raise :class:`MissingNpzKey` (file, key, metric) unless every key ``metric`` reads is present."""
        for key in REFERENCE_KEYS[metric]:
            if key not in self.keys:
                raise MissingNpzKey(
                    f"{self.path}: no key {key!r}, which {metric} reads (ADM reference batches hold "
                    f"{', '.join(f'{m}: {k}' for m, k in REFERENCE_KEYS.items())}); keys present: "
                    f"{sorted(self.keys)}. Leave {metric!r} out of metrics=, or use a complete reference batch.")

    def statistics(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, sigma)`` for ``"fid"`` (pool_3) or ``"sfid"`` (spatial), float64, shape-checked."""
        if metric not in ("fid", "sfid"):
            raise ValueError(f"statistics are stored for 'fid' and 'sfid', not {metric!r}")
        self.require(metric)
        mk, sk = REFERENCE_KEYS[metric]
        with np.load(self.path) as z:
            mu, sigma = np.asarray(z[mk], np.float64), np.asarray(z[sk], np.float64)
        d = _DIMS[mk]
        if mu.shape != (d,) or sigma.shape != (d, d):
            raise ValueError(f"{self.path}: {mk} {mu.shape} / {sk} {sigma.shape}, expected ({d},) / ({d}, {d}) "
                             f"for {metric}")
        return mu, sigma

    def num_images(self) -> int:
        self.require("precision")
        return npz_array_header(self.path, IMAGES_KEY)[0][0]

    def images(self, batch_size: int) -> Iterator[np.ndarray]:
        """The ``arr_0`` images in batches (uint8 NHWC), for precision/recall."""
        self.require("precision")
        shape, dtype = npz_array_header(self.path, IMAGES_KEY)
        if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"{self.path}: arr_0 is {dtype} {shape}, expected uint8 [N, H, W, 3]")
        return iter_npz_batches(self.path, batch_size, IMAGES_KEY)


def load_adm_reference(path: str | os.PathLike) -> AdmReference:
    return AdmReference(path)
