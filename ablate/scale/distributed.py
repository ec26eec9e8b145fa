"""Scale-out helpers: rank/world, world-size-independent training randomness, sharded evaluation.

Three guarantees, each tested on CPU with two gloo processes (``tests/test_distributed.py``):

1. **Training does not depend on the number of processes.** The data order comes from
   :class:`ablate.pipeline.lit.StepSampler` (a global order; rank r takes the contiguous share
   ``[r B/W, (r+1) B/W)`` of every global batch of B images over W processes). The per-sample randomness of a
   step (noise eps, time t, class dropout) is drawn for the *global* batch on every rank from the same seed and
   each rank keeps its share (:class:`GlobalBatchRandom`), so image i of step k sees the same (x, eps, t, drop)
   whatever W is. DDP averages the per-rank mean gradients, which equals the mean over the global batch. The
   EMA is then updated identically on every rank from identical weights, so it stays consistent without
   communication. Hence a run resumed on another number of devices continues the same trajectory.
2. **Evaluation is sharded by image index.** Rank r generates images :func:`shard_range` (contiguous), with the
   per-image seeds and labels that single-process generation gives the same indices
   (``ablate.pipeline.evaluation.generate(start=...)``); features are gathered in rank order, which is index order, and
   one FID is computed from them: the same samples, the same features, the same number.
3. **No rank duplicates a side effect**: only rank 0 writes result rows, grids and checkpoints.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = [
    "rank_world",
    "is_global_zero",
    "shard_range",
    "GlobalBatchRandom",
    "gather_rows",
    "all_reduce_mean",
    "extract_features",
    "sharded_fid",
    "sharded_metrics",
    "init_from_cluster_env",
    "broadcast_object",
]


def rank_world() -> tuple[int, int]:
    """(global rank, world size) of the initialised default process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_global_zero() -> bool:
    """Rank 0 of the process group; before a group exists, rank 0 of the processes torchrun or srun created
    (``RANK``, ``SLURM_PROCID``), so that a job failing early still reports once, not once per process."""
    rank, world = rank_world()
    if world > 1:
        return rank == 0
    import os

    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var]) == 0
    return True


def shard_range(n: int, rank: int, world: int) -> range:
    """The contiguous image indices of ``rank`` among ``world`` ranks: balanced shares, the first ``n % world``
    ranks take one more, concatenated in rank order they give ``range(n)``."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world and world >= 1, got rank={rank}, world={world}")
    if n < 0:
        raise ValueError(f"number of items must be >= 0, got {n}")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


# ----------------------------------------------------------------------------------------------------
# World-size-independent training randomness
# ----------------------------------------------------------------------------------------------------

_SIZED = ("randn", "rand", "randint")
# Random ops whose draws could not be mapped onto a global batch: refused inside the mode, never silently
# left per-rank (a per-rank draw would make the trajectory depend on the number of processes).
_REFUSED = {
    "randn_like", "rand_like", "randint_like", "normal", "bernoulli", "multinomial", "randperm", "poisson",
    "normal_", "uniform_", "bernoulli_", "random_", "exponential_", "cauchy_", "geometric_", "log_normal_",
    "dropout", "dropout_", "feature_dropout", "alpha_dropout",
}


def _size_of(name: str, args: tuple, kwargs: dict) -> tuple[tuple[int, ...], tuple, str]:
    """(size, the other positional args, where size was found) of a randn/rand/randint call."""
    if "size" in kwargs:
        return tuple(kwargs["size"]), args, "kwarg"
    if name == "randint":  # randint(high, size) or randint(low, high, size)
        return tuple(args[-1]), args[:-1], "last"
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(args[0]), (), "tuple"
    return tuple(int(a) for a in args), (), "varargs"


class GlobalBatchRandom(TorchFunctionMode):
    """Inside this mode, a ``torch.randn/rand/randint`` draw shaped ``[B_local, ...]`` is drawn as
    ``[world * B_local, ...]`` and the rank's contiguous slice ``[rank B_local, (rank+1) B_local)`` is returned.

    With every rank seeded identically at the start of the step, the rank holding global images
    ``[r B, (r+1) B)`` therefore gets exactly the noise, times and class-dropout draws that one process
    drawing for the whole global batch gives those images. Other random ops (``randn_like``, in-place
    ``normal_``, dropout, ...) raise, naming the op, and so do draws whose first dimension is not the local
    batch size: either would silently make training depend on the number of processes. ``world == 1`` is
    the identity (enter the mode only when ``world > 1``).
    """

    def __init__(self, rank: int, world: int, local_batch: int):
        super().__init__()
        if world < 1 or not 0 <= rank < world or local_batch < 1:
            raise ValueError(f"bad shard: rank={rank}, world={world}, local_batch={local_batch}")
        self.rank, self.world, self.local_batch = rank, world, local_batch

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name in _REFUSED:
            raise RuntimeError(
                f"random op torch.{name} inside a data-parallel training step: its draws cannot be mapped onto "
                f"the global batch (see ablate.scale.distributed.GlobalBatchRandom); draw with torch.randn/rand/"
                f"randint shaped [batch, ...] instead"
            )
        if name not in _SIZED:
            return func(*args, **kwargs)
        size, rest, where = _size_of(name, args, kwargs)
        if not size or size[0] != self.local_batch:
            raise RuntimeError(
                f"torch.{name} of shape {size} inside a data-parallel training step: the first dimension must be "
                f"the local batch size {self.local_batch} so that it can be drawn for the global batch"
            )
        big = (size[0] * self.world, *size[1:])
        if where == "kwarg":
            kwargs["size"] = big
            out = func(*rest, **kwargs)
        elif where == "last":
            out = func(*rest, big, **kwargs)
        else:
            out = func(big, **kwargs)
        b = self.local_batch
        return out[self.rank * b : (self.rank + 1) * b]


# ----------------------------------------------------------------------------------------------------
# Collectives
# ----------------------------------------------------------------------------------------------------


def gather_rows(x: Tensor) -> Tensor:
    """Concatenate every rank's ``[n_r, ...]`` tensor in rank order (shares may differ in length), on all ranks.

    Uses ``all_gather`` on padded tensors on the tensor's device (gloo: CPU, nccl: CUDA)."""
    rank, world = rank_world()
    if world == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s.item()) for s in sizes]
    m = max(sizes)
    pad = torch.zeros((m - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    parts = [torch.empty((m, *x.shape[1:]), dtype=x.dtype, device=x.device) for _ in range(world)]
    dist.all_gather(parts, torch.cat([x, pad]).contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])


def all_reduce_mean(value: float, weight: float = 1.0) -> float:
    """The weight-averaged ``value`` over ranks (e.g. NFE per image weighted by each rank's image count)."""
    _, world = rank_world()
    if world == 1:
        return float(value)
    t = torch.tensor([value * weight, weight], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t[0] / t[1])


# ----------------------------------------------------------------------------------------------------
# Sharded FID
# ----------------------------------------------------------------------------------------------------




def extract_features(images: Tensor, feat_extractor, feat_layer: str, *, channels=None, batch_size: int = 256,
                     cuda: bool = False) -> Tensor:
    """torch-fidelity features ``[N, D]`` of float images in [-1, 1] (or uint8), as compute_metrics feeds them."""
    from torch_fidelity.utils import get_featuresdict_from_dataset

    from ..metrics.fid import Uint8Images

    if len(images) == 0:
        raise ValueError("no images to extract features from")
    fd = get_featuresdict_from_dataset(Uint8Images(images, channels), feat_extractor, batch_size, cuda,
                                       save_cpu_ram=True, verbose=False)
    return fd[feat_layer]


def sharded_fid(local_images: Tensor, real, *, extractor: str = "auto", batch_size: int = 256,
                cache_dir=None, real_cache_name: str | None = None, inception_weights=None,
                device: str | None = None) -> dict | None:
    """One FID over the images of all ranks: each rank extracts the features of its share (``local_images``,
    contiguous indices in rank order), the features are gathered, and rank 0 computes

    .. math:: \\mathrm{FID} = \\lVert\\mu_f - \\mu_r\\rVert^2 + \\operatorname{tr}(\\Sigma_f + \\Sigma_r
              - 2 (\\Sigma_f \\Sigma_r)^{1/2})

    (the FID of Heusel et al. 2017, "GANs trained by a two time-scale update rule ...") with torch-fidelity's
    own statistics and distance, and the real statistics from the cache that
    :func:`ablate.metrics.fid.compute_metrics` uses. Returns ``{"fid", "num_fake",
    "num_real", "extractor"}`` on rank 0 and ``None`` on the other ranks. With one process it equals
    ``compute_metrics(local_images, real, metrics=("fid",))`` on the same images.
    """
    from torch_fidelity.metric_fid import (
        fid_features_to_statistics,
        fid_input_id_to_statistics_cached,
        fid_statistics_to_metric,
    )
    from torch_fidelity.utils import create_feature_extractor, resolve_feature_layer_for_metric

    from ..metrics.fid import fidelity_setup, image_shape

    rank, world = rank_world()
    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")) != "cpu"
    name, real_ds, channels, kw = fidelity_setup(real, extractor, image_shape(local_images), cache_dir,
                                                  real_cache_name, inception_weights)
    layer = resolve_feature_layer_for_metric("fid", feature_extractor=name)
    fe = create_feature_extractor(name, [layer], cuda=cuda, verbose=False, **kw)
    feats = extract_features(local_images, fe, layer, channels=channels, batch_size=batch_size, cuda=cuda)
    if world > 1 and dist.get_backend() == "nccl":
        feats = gather_rows(feats.cuda()).cpu()
    else:
        feats = gather_rows(feats)
    if rank != 0:
        return None
    fake_stats = fid_features_to_statistics(feats)
    real_stats = fid_input_id_to_statistics_cached(
        2, fe, layer, input2=real_ds, batch_size=batch_size, cuda=cuda, save_cpu_ram=True, verbose=False, **kw)
    fid = fid_statistics_to_metric(fake_stats, real_stats, False)["frechet_inception_distance"]
    return {"fid": float(fid), "num_fake": int(feats.shape[0]), "num_real": len(real_ds), "extractor": name}


def sharded_metrics(local_images: Tensor, real, *, extractor: str = "auto", metrics=("fid",),
                    real_cache_name: str | None = None, **kw) -> dict | None:
    """The metrics of :func:`ablate.metrics.fid.compute_metrics` over the images of all ranks (rank 0 returns
    them, the others ``None``). FID alone goes through :func:`sharded_fid` (features gathered); KID, IS and
    precision/recall need the full feature sets inside torch-fidelity, so for them the images are gathered to
    every rank as uint8 (1 byte per pixel) and rank 0 computes everything with ``compute_metrics``."""
    from ..data.embedded import to_uint8
    from ..metrics import compute_metrics

    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if set(metrics) == {"fid"}:
        return sharded_fid(local_images, real, extractor=extractor, real_cache_name=real_cache_name, **kw)
    rank, world = rank_world()
    u8 = torch.stack([to_uint8(x) for x in local_images])
    if world > 1 and dist.get_backend() == "nccl":
        u8 = gather_rows(u8.cuda()).cpu()
    else:
        u8 = gather_rows(u8)
    if rank != 0:
        return None
    return compute_metrics(u8, real, extractor=extractor, metrics=metrics, real_cache_name=real_cache_name, **kw)


# ----------------------------------------------------------------------------------------------------
# Processes created by the cluster (srun, torchrun)
# ----------------------------------------------------------------------------------------------------


def init_from_cluster_env() -> tuple[int, int]:
    """When the processes were created outside Lightning (``torchrun``, or ``srun`` with one task per device, as
    the submitit SLURM launcher does), initialise the default process group now, before training, so that
    rank 0 alone can take the checkpoint store's lock and broadcast its train-or-reuse decision (several tasks
    of one job blocking on one file lock would deadlock). Lightning reuses an initialised group. Returns
    (rank, world); a no-op (0, 1) in a single process, and under ddp_fork/ddp_spawn (Lightning creates those
    processes itself, later)."""
    import os

    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if dist.is_initialized():
        return rank_world()
    if TorchElasticEnvironment.detect():
        env = TorchElasticEnvironment()
    elif SLURMEnvironment.detect():
        env = SLURMEnvironment()
    else:
        return 0, 1
    if env.world_size() <= 1:
        return 0, 1
    os.environ.setdefault("MASTER_ADDR", env.main_address)
    os.environ.setdefault("MASTER_PORT", str(env.main_port))
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank())
        backend = "nccl"
    dist.init_process_group(backend, rank=env.global_rank(), world_size=env.world_size())
    return rank_world()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (identity in a single process)."""
    if rank_world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
