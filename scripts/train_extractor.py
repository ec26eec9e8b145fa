"""Train the small FID feature extractor of an embedded dataset and write its committed asset.

    python scripts/train_extractor.py digits   # -> ablate/metrics/assets/ablate-digits.pt
    python scripts/train_extractor.py mnist5k  # -> ablate/metrics/assets/ablate-mnist5k.pt

Fixed seed, train split only (the test split stays held out, so FID(train, test) measures generalisation of
the *data*, not of the extractor). Augmentation: random translation by up to ``shift`` pixels (zero = -1
padding) so the features are not tied to exact pixel positions. AdamW with cosine decay. The asset stores
the config, the float32 state dict and the measured train/test accuracy.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate.data import build_dataset, dataset_info  # noqa: E402
from ablate.metrics.extractor import SmallCNN, extractor_path, load_extractor  # noqa: E402

RECIPES = {  # dataset: (epochs, batch size, learning rate, max shift in pixels)
    "digits": (60, 64, 3e-3, 1),
    "mnist5k": (30, 64, 2e-3, 2),
    "fashion": (4, 128, 2e-3, 2),  # needs `python -m ablate.data.fashion` first
}


def random_shift(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by an integer offset in [-shift, shift]^2, filling with background (-1)."""
    if shift == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (shift,) * 4, value=-1.0)
    dy = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
    return torch.stack([padded[i, :, dy[i]: dy[i] + h, dx[i]: dx[i] + w] for i in range(b)])


@torch.no_grad()
def forward_batched(net: SmallCNN, x: torch.Tensor, bs: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """``net(x)`` in chunks (60k Fashion-MNIST images in one batch would need ~6 GB of activations)."""
    outs = [net(x[i: i + bs]) for i in range(0, len(x), bs)]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


@torch.no_grad()
def feature_scale(net: SmallCNN, x: torch.Tensor) -> float:
    """``1 / sqrt(mean_d Var[h_d])`` over the training images: makes the 64-d features O(1) per dimension, the
    scale KID's cubic kernel ``(h.h'/d + 1)^3`` is designed for (FID scales by its square)."""
    h = forward_batched(net, x)[0].double()
    return float(1.0 / h.var(dim=0).mean().sqrt())


@torch.no_grad()
def accuracy(net: SmallCNN, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((forward_batched(net, x)[1].argmax(1) == y).float().mean())


def train(dataset: str, seed: int = 0, out: Path | None = None) -> dict:
    if dataset not in RECIPES:
        raise ValueError(f"no extractor recipe for {dataset!r}; valid choices: {', '.join(RECIPES)}")
    epochs, bs, lr, shift = RECIPES[dataset]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    info = dataset_info(dataset)
    train_ds, test_ds = build_dataset(dataset, "train"), build_dataset(dataset, "test")
    x, y = train_ds.images, train_ds.labels
    net = SmallCNN(info.channels, info.size, info.num_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x) / bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    t0 = time.time()
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), bs):
            idx = perm[i: i + bs]
            loss = F.cross_entropy(net(random_shift(x[idx], shift, gen))[1], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        if epoch % 10 == 9 or epoch == epochs - 1 or len(x) > 10_000:
            print(f"epoch {epoch + 1}/{epochs} loss {loss.item():.4f} "
                  f"test acc {accuracy(net, test_ds.images, test_ds.labels):.4f} ({time.time() - t0:.0f} s)")
    meta = {"dataset": dataset, "seed": seed, "epochs": epochs, "batch_size": bs, "lr": lr, "shift": shift,
            "train_accuracy": accuracy(net, x, y),
            "test_accuracy": accuracy(net, test_ds.images, test_ds.labels),
            "train_seconds": round(time.time() - t0, 1)}
    return save(net, meta, x, out or extractor_path(f"ablate-{dataset}"))


def save(net: SmallCNN, meta: dict, x_train: torch.Tensor, out: Path) -> dict:
    """Write the asset: config, float32 state dict, feature scale (from ``x_train``) and ``meta``."""
    net.eval()
    meta = dict(meta, feature_scale=feature_scale(net, x_train))
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    torch.save({"config": net.config, "state_dict": state, "meta": meta}, out)
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB): {meta}")
    return meta


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="+", choices=sorted(RECIPES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recalibrate", action="store_true",
                   help="only recompute feature_scale of the existing asset (no training)")
    args = p.parse_args(argv)
    for d in args.datasets:
        if args.recalibrate:
            net, meta = load_extractor(f"ablate-{d}")
            save(net, meta, build_dataset(d, "train").images, extractor_path(f"ablate-{d}"))
        else:
            train(d, args.seed)


if __name__ == "__main__":
    main()
