"""The ADM evaluation protocol (guided-diffusion ``evaluations/evaluator.py``) without TensorFlow.

DiT and SiT report FID, sFID, Inception Score and precision/recall from ADM's evaluator on 50K samples
against ``VIRTUAL_imagenet256_labeled.npz``. This module computes the same five numbers with
torch-fidelity's port of the same Inception graph (``inception-v3-compat``, the TF ``2015-12-05`` graph ADM
downloads as ``classify_image_graph_def.pb``) in one forward pass per batch::

    evaluate_adm("samples.npz", "VIRTUAL_imagenet256_labeled.npz")
    # {"fid": ..., "sfid": ..., "inception_score": ..., "precision": ..., "recall": ..., "protocol": "adm", ...}
    python -m ablate.metrics.adm samples.npz VIRTUAL_imagenet256_labeled.npz

Inputs: ADM feeds uint8 NHWC images, cast to float32, into the graph's ``ExpandDims:0``; the graph resizes to
299x299 itself (TF1 ``ResizeBilinear``, ``align_corners=False``) and maps ``x -> (x - 128) / 128``.
torch-fidelity's forward does the same two steps (``interpolate_bilinear_2d_like_tensorflow1x``, then
``(x - 128) / 128``), and its TF1 tests feed the TF graph through the same ``ExpandDims:0``. So images of any
size (256x256 here) go in as uint8, unresized.

Features (:class:`AdmInception`):

* ``pool``: ``pool_3:0``, 2048-d = torch-fidelity's ``"2048"`` (FID, precision/recall);
* ``logits``: ``pool_3 @ W`` with ``W`` the weight of ``softmax/logits/MatMul`` and no bias, 1008 classes
  (ADM's ``_create_softmax_graph``) = torch-fidelity's ``"logits_unbiased"`` (Inception Score);
* ``spatial``: ``mixed_6/conv:0[..., :7]``, 17 x 17 x 7 = 2023-d (sFID), taken by a forward hook on
  torch-fidelity's ``Mixed_6d.branch1x1`` (post-ReLU), flattened in TF's NHWC order.

Why ``Mixed_6d.branch1x1`` and post-activation (the evidence):

1. *Block numbering.* The TF graph names its Inception blocks in order ``mixed, mixed_1, ..., mixed_10``:
   ``mixed``-``mixed_2`` are the three 35x35 blocks (torch-fidelity ``Mixed_5b/5c/5d``), ``mixed_3`` the grid
   reduction to 17x17x768 (``Mixed_6a``), ``mixed_4``-``mixed_7`` the four 17x17 blocks (``Mixed_6b``,
   ``Mixed_6c``, ``Mixed_6d``, ``Mixed_6e``), ``mixed_8`` the reduction to 8x8 (``Mixed_7a``), ``mixed_9``/``mixed_10``
   the two 8x8 blocks (``Mixed_7b/7c``). So ``mixed_6`` is the *third* 17x17 block, ``Mixed_6d`` (hooking
   ``Mixed_6e``, as one public port does, takes ``mixed_7``). Inside a block, the layer ``conv`` without a
   ``tower`` prefix is the 1x1 branch (``tower``: the 1x7/7x1 chain, ``tower_1``: the double chain,
   ``tower_2``: pool + 1x1): ``branch1x1``, 768 -> 192 channels at 17x17. torch-fidelity's own weight converter
   (``utils/util_convert_inception_weights.py``) maps exactly ``mixed_6/conv/conv2d_params`` and
   ``mixed_6/conv/batchnorm`` to ``Mixed_6d.branch1x1.conv`` and ``Mixed_6d.branch1x1.bn``.
2. *Pre or post activation.* In this graph a conv layer ``X`` is a scope holding ``X/conv2d_params`` (the
   kernel), ``X/Conv2D`` (the convolution op), ``X/batchnorm`` (the batch-norm op, parameters
   ``X/batchnorm/{beta,gamma,moving_mean,moving_variance}``), and the op named ``X`` itself, which is the
   layer's output that the next layer consumes: the ReLU (layer-dumping scripts for this graph read
   ``X/Conv2D`` and ``X/batchnorm/*`` as separate nodes; pools follow the same convention, e.g.
   ``mixed_6/tower_2/pool``). ``mixed_6/conv:0`` is therefore ``relu(bn(conv(x)))``, i.e. the output of
   torch-fidelity's ``BasicConv2d`` module ``Mixed_6d.branch1x1`` (conv, BN with eps 0.001, ReLU), shape NHWC
   ``[N, 17, 17, 192]``; ADM keeps ``[..., :7]`` and reshapes row-major: index ``(h * 17 + w) * 7 + c``.
   The stored ``mu_s``/``sigma_s`` are in that order, so the NCHW tensor must be permuted before flattening.
3. *Measured by others (with the real weights).* The public port lavinal712/ADM-evaluation-suite-pytorch
   (after its PR #2, July 2025) hooks this same module's output on torch-fidelity's network, permuted to NHWC,
   and reports sFID 6.1405 vs the TF evaluator's 6.1404 (ADM-G+U, ImageNet-256), 5.0935 vs 5.0946
   (ImageNet-128). Its earlier version flattened the NCHW ``[:, :7]`` (channel-major) and got sFID 299; its first
   IS (1.10) applied torchvision's classifier to another network's pool features. The layer choice, the
   layout and "logits from the same network, no bias" are what those numbers pin down.

Shapes are checked offline on the module with random weights (``tests/metrics/test_adm.py``); equality with
the TF evaluator cannot be checked without the weights (see ``ablate/metrics/README.md``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .adm_io import IMAGES_KEY, AdmReference, iter_npz_batches, npz_array_header, npz_keys, samples_to_uint8
from .adm_scores import fid_from_statistics, full_float32, inception_score, precision_recall
from .inception import ENV_VAR, INCEPTION, INCEPTION_FILENAME, inception_weights_path

__all__ = ["METRICS", "NUM_LOGITS", "POOL_DIM", "PROTOCOL", "SPATIAL_DIM", "SPATIAL_MODULE", "AdmInception",
           "adm_features", "build_adm_inception", "evaluate_adm", "main"]

PROTOCOL = "adm"
METRICS = ("fid", "sfid", "inception_score", "precision", "recall")
_ALIASES = {"is": "inception_score", "isc": "inception_score", "prc": ("precision", "recall"),
            "pr": ("precision", "recall")}
SPATIAL_MODULE = "Mixed_6d.branch1x1"  # TF mixed_6/conv (see the module docstring)
SPATIAL_CHANNELS = 7
SPATIAL_SIZE = 17
POOL_DIM, SPATIAL_DIM, NUM_LOGITS = 2048, SPATIAL_SIZE * SPATIAL_SIZE * SPATIAL_CHANNELS, 1008


class AdmInception(nn.Module):
    """torch-fidelity's Inception returning ``{"pool": [B, 2048], "spatial": [B, 2023], "logits": [B, 1008]}``
    (float32) for uint8 ``[B, 3, H, W]`` images, in one forward pass (the spatial feature by a forward hook).

    ``weights_id`` identifies the weights (for caches); ``None`` when unknown."""

    def __init__(self, extractor: nn.Module, weights_id: str | None = None):
        super().__init__()
        if list(getattr(extractor, "features_list", [])) != ["2048", "logits_unbiased"]:
            raise ValueError("the extractor must be built with features_list=['2048', 'logits_unbiased']")
        self.net, self.weights_id = extractor, weights_id
        self._spatial: Tensor | None = None
        extractor.get_submodule(SPATIAL_MODULE).register_forward_hook(self._grab)

    def _grab(self, module, inputs, output: Tensor) -> None:
        # NCHW [B, 192, 17, 17] -> TF's NHWC [..., :7] flattened (h, w, c), c fastest; reshape copies
        self._spatial = output[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(len(output), -1).float()

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        self._spatial = None
        pool, logits = self.net(images)
        spatial, self._spatial = self._spatial, None
        return {"pool": pool, "spatial": spatial, "logits": logits}


def _file_id(path: Path) -> str:
    st = path.stat()
    return f"{path.name}-{st.st_size}-{st.st_mtime_ns}"


def build_adm_inception(inception_weights: str | os.PathLike | None = None, *, device=None,
                        random_init: int | None = None) -> AdmInception:
    """The ADM feature network on ``device`` (default: CUDA if available), weights from
    :func:`ablate.metrics.inception.inception_weights_path` (argument, ``$ABLATE_INCEPTION_WEIGHTS``, torch hub).

    ``random_init=seed`` builds it *without* weights (He-normal convs, identity batch norm, small random ``fc``):
    for shape and plumbing checks only, never for reported numbers."""
    from unittest import mock

    from torch_fidelity import feature_extractor_inceptionv3 as fi

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cls, feats = fi.FeatureExtractorInceptionV3, ["2048", "logits_unbiased"]
    if random_init is None:
        path = inception_weights_path(inception_weights)
        net = cls(INCEPTION, feats, feature_extractor_weights_path=str(path))
        weights_id = _file_id(path)
    else:  # the constructor always loads a file: stub the load, then initialise deterministically
        with mock.patch.object(fi.torch, "load", return_value={}), \
                mock.patch.object(cls, "load_state_dict", return_value=None):
            net = cls(INCEPTION, feats, feature_extractor_weights_path="<not read>")
        g = torch.Generator().manual_seed(int(random_init))
        with torch.no_grad():
            for name, t in net.state_dict().items():
                if name.endswith("conv.weight"):
                    t.copy_(torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5)
                elif name == "fc.weight":
                    t.copy_(torch.randn(t.shape, generator=g) * 0.05)
                elif name.endswith(("running_var", "bn.weight")):
                    t.fill_(1.0)
                elif t.is_floating_point():
                    t.zero_()
        weights_id = f"random-{int(random_init)}"
    return AdmInception(net, weights_id).to(device).eval()


def _batches(images, batch_size: int) -> tuple[Iterable[np.ndarray | Tensor], int | None]:
    """Uniform iteration over the accepted inputs: (batches of uint8 NHWC arrays or tensors, N or None)."""
    if isinstance(images, (str, os.PathLike)):
        shape, dtype = npz_array_header(images, IMAGES_KEY)
        if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"{images}: arr_0 is {dtype} {shape}, expected uint8 [N, H, W, 3] (ADM sample format)")
        return iter_npz_batches(images, batch_size, IMAGES_KEY), shape[0]
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"numpy images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
        return (images[i : i + batch_size] for i in range(0, len(images), batch_size)), len(images)
    if torch.is_tensor(images):  # NCHW float in [-1, 1] (DiT's conversion) or uint8
        if images.ndim != 4:
            raise ValueError(f"tensor images must be [N, C, H, W], got {tuple(images.shape)}")
        return ((samples_to_uint8(images[i : i + batch_size]) for i in range(0, len(images), batch_size)),
                len(images))
    return images, None  # an iterable of uint8 NHWC numpy batches


def adm_features(images, model: AdmInception, *, batch_size: int = 64, progress: bool = False) -> dict[str, np.ndarray]:
    """``{"pool": [N, 2048], "spatial": [N, 2023], "logits": [N, 1008]}`` float32 for a samples ``.npz``
    (``arr_0``), uint8 NHWC numpy images, a tensor ``[N, C, H, W]`` (float in [-1, 1], converted with DiT's rule,
    or uint8), or an iterable of uint8 NHWC batches."""
    it, total = _batches(images, batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=None if total is None else -(-total // batch_size), desc="ADM features", unit="batch")
    device = next(model.parameters()).device
    out: dict[str, list[np.ndarray]] = {"pool": [], "spatial": [], "logits": []}
    with torch.inference_mode(), full_float32():
        for b in it:
            b = torch.from_numpy(np.ascontiguousarray(b)) if isinstance(b, np.ndarray) else b
            if b.dtype != torch.uint8 or b.ndim != 4 or b.shape[-1] != 3:
                raise ValueError(f"expected uint8 [B, H, W, 3] batches, got {b.dtype} {tuple(b.shape)}")
            f = model(b.permute(0, 3, 1, 2).contiguous().to(device))  # NHWC -> NCHW
            for k in out:
                out[k].append(f[k].cpu().numpy())
    if not out["pool"]:
        raise ValueError("no images")
    return {k: np.concatenate(v) for k, v in out.items()}


def _reference_pool(ref: AdmReference, model: AdmInception, batch_size: int, cache_dir, progress: bool) -> np.ndarray:
    """pool_3 features of the reference's ``arr_0``, cached per (reference file, weights)."""
    path = None
    if cache_dir is not False and model.weights_id is not None:
        from .fid import default_cache_dir

        key = hashlib.sha256(f"{ref.path.resolve()}|{_file_id(ref.path)}|{model.weights_id}".encode()).hexdigest()
        path = Path(cache_dir or default_cache_dir()) / f"adm-ref-pool-{key[:16]}.npy"
        if path.is_file():
            return np.load(path)
    pool = adm_features(ref.images(batch_size), model, batch_size=batch_size, progress=progress)["pool"]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, pool)
        os.replace(tmp, path)
    return pool


def _metric_list(metrics) -> list[str]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    out: list[str] = []
    for m in metrics:
        m = _ALIASES.get(m, m)
        for x in (m if isinstance(m, tuple) else (m,)):
            if x not in METRICS:
                raise ValueError(f"unknown metric {x!r}; valid choices: {METRICS} (aliases {sorted(_ALIASES)})")
            if x not in out:
                out.append(x)
    if not out:
        raise ValueError("no metrics requested")
    return out


def evaluate_adm(samples, reference: str | os.PathLike | AdmReference, *, metrics=METRICS,
                 inception_weights: str | os.PathLike | None = None, model: AdmInception | None = None,
                 batch_size: int = 64, device=None, cache_dir: str | os.PathLike | bool | None = None,
                 pr_precision: str = "float16", progress: bool = False) -> dict:
    """Score samples against an ADM reference batch with ADM's formulas.

    Args:
        samples: a samples ``.npz`` path (``arr_0`` uint8 NHWC), uint8 NHWC numpy images, or a tensor
            ``[N, C, H, W]`` (float in [-1, 1], converted with DiT's rule, or uint8).
        reference: ``VIRTUAL_imagenet256_labeled.npz`` or another reference batch (keys: :data:`REFERENCE_KEYS`).
        metrics: a subset of ``("fid", "sfid", "inception_score", "precision", "recall")``; a reference key a
            requested metric needs is checked before any image is processed.
        model: a prebuilt :func:`build_adm_inception` (reuse it across evaluations); else built from
            ``inception_weights`` on ``device``.
        cache_dir: where the reference's ``arr_0`` pool features are cached (default ablate's FID cache
            directory); ``False`` disables the cache.
        pr_precision: ``"float16"`` (ADM's distance blocks) or ``"float32"``.

    Returns ``{metric: float, ..., "protocol": "adm", "num_fake": N, "num_real": reference images used for
    precision/recall or None, "extractor": "inception-v3-compat"}``.
    """
    from .adm_io import load_adm_reference

    wanted = _metric_list(metrics)
    ref = reference if isinstance(reference, AdmReference) else load_adm_reference(reference)
    for m in wanted:  # fail on a missing key or a bad shape before any image is processed
        if m != "inception_score":
            ref.require(m)
    stats = {m: ref.statistics(m) for m in ("fid", "sfid") if m in wanted}
    if model is None:
        model = build_adm_inception(inception_weights, device=device)
    feats = adm_features(samples, model, batch_size=batch_size, progress=progress)
    out: dict = {}
    for m, (mu, sigma) in stats.items():
        out[m] = fid_from_statistics(feats["pool" if m == "fid" else "spatial"], mu, sigma)
    if "inception_score" in wanted:
        out["inception_score"] = inception_score(feats["logits"])
    num_real = None
    if "precision" in wanted or "recall" in wanted:
        ref_pool = _reference_pool(ref, model, batch_size, cache_dir, progress)
        p, r = precision_recall(ref_pool, feats["pool"], precision=pr_precision,
                                device=next(model.parameters()).device)
        out.update({k: v for k, v in (("precision", p), ("recall", r)) if k in wanted})
        num_real = len(ref_pool)
    out.update(protocol=PROTOCOL, num_fake=len(feats["pool"]), num_real=num_real, extractor=INCEPTION)
    return out


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------

_LABELS = {"inception_score": "Inception Score", "fid": "FID", "sfid": "sFID", "precision": "Precision",
           "recall": "Recall"}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(
        prog="python -m ablate.metrics.adm",
        description="FID, sFID, Inception Score, precision and recall with the ADM evaluator's protocol "
                    "(torch-fidelity's Inception, no TensorFlow). Note the order: samples first (ADM's own "
                    "evaluator.py takes the reference first).")
    p.add_argument("samples", help="samples .npz (arr_0: uint8 N x H x W x 3)")
    p.add_argument("reference", help="ADM reference batch, e.g. VIRTUAL_imagenet256_labeled.npz")
    p.add_argument("--metrics", default=",".join(METRICS), help="comma-separated subset of " + ",".join(METRICS))
    p.add_argument("--inception-weights", default=None, help=f"local {INCEPTION_FILENAME} (else ${ENV_VAR})")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None)
    p.add_argument("--no-cache", action="store_true", help="do not cache the reference's precision/recall features")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    for f in (args.samples, args.reference):
        if not Path(f).is_file():
            print(f"error: {f} does not exist", file=sys.stderr)
            return 2
    if "mu" in npz_keys(args.samples) and "mu" not in npz_keys(args.reference):
        print(f"error: {args.samples} holds reference statistics (mu) and {args.reference} does not: the arguments "
              "look swapped (this CLI takes SAMPLES first, ADM's evaluator.py takes the reference first)",
              file=sys.stderr)
        return 2
    try:
        model = build_adm_inception(args.inception_weights, device=args.device)
    except FileNotFoundError as e:
        print(f"error: the ADM protocol needs the FID Inception weights {INCEPTION_FILENAME} (pass "
              f"--inception-weights or set ${ENV_VAR}); {e}", file=sys.stderr)
        return 2
    res = evaluate_adm(args.samples, args.reference, metrics=args.metrics.split(","), model=model,
                       batch_size=args.batch_size, cache_dir=False if args.no_cache else None, progress=True)
    if args.json:
        print(json.dumps(res))
    else:
        for k in ("inception_score", "fid", "sfid", "precision", "recall"):
            if k in res:
                print(f"{_LABELS[k]}: {res[k]}")
        print(f"protocol: {res['protocol']} (samples {res['num_fake']}, reference images {res['num_real']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
