"""One FSDP training + sharded evaluation, run by ``torchrun`` from ``tests/test_distributed.py``.

    torchrun --standalone --nproc_per_node 2 tests/fsdp_worker.py OUT_DIR REC_DIR [override ...]

Composes the config with the overrides (plus ``trainer.strategy=fsdp``), trains through
``ablate.pipeline.train.train_or_reuse`` and evaluates through ``ablate.pipeline.evaluation.evaluate`` as
``ablate.run`` does, and
records in REC_DIR, per rank: the logged global loss of every step, the shapes and sizes of the rank's local
``net`` and ``ema`` shards at the end of training; on rank 0 the returned EMA and info, and the result rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ablate.pipeline.metric_names import TRAIN_LOSS  # noqa: E402


class RecordShards(Callback):
    def __init__(self, out: Path):
        self.out = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with open(self.out / f"loss_rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "loss": float(trainer.callback_metrics[TRAIN_LOSS]),
                                "local_batch": len(batch[0])}) + "\n")

    def on_train_end(self, trainer, pl_module):
        shards = {"strategy": type(trainer.strategy).__name__,
                  "net_shapes": [list(p.shape) for p in pl_module.net.parameters()],
                  "ema_shapes": [list(p.shape) for p in pl_module.ema.parameters()],
                  "net_numel": sum(p.numel() for p in pl_module.net.parameters())}
        (self.out / f"shards_rank{trainer.global_rank}.json").write_text(json.dumps(shards))


def main(out_dir: str, rec_dir: str, *overrides: str) -> None:
    from hydra import compose, initialize_config_dir

    from ablate.pipeline.build import build_experiment
    from ablate.pipeline.evaluation import evaluate
    from ablate.pipeline.train import train_or_reuse
    from ablate.scale.distributed import rank_world

    torch.set_num_threads(1)
    rec = Path(rec_dir)
    rec.mkdir(parents=True, exist_ok=True)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"out_dir={out_dir}", "trainer.strategy=fsdp", *overrides])
    exp = build_experiment(cfg)
    training, ema, info = train_or_reuse(exp, callbacks=[RecordShards(rec)])
    rank, _ = rank_world()
    out = evaluate(exp, training, ema, info, job_dir=rec / f"rank{rank}")
    if rank == 0:
        torch.save({"ema": ema, "info": info, "rows": out["rows"]}, rec / "result.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])
