"""One job end to end: build, skip if recorded, train or reuse, evaluate; and standalone checkpoint evaluation.

``run`` is what ``python -m ablate.run`` and the studies call for one point:

1. build the experiment (bad values and combinations fail here, before any work);
2. if every evaluation seed of this point is already in the results store, report the rows and stop
   (``redo=true`` evaluates again; the new rows supersede the old ones, see :mod:`ablate.results`);
3. find or train the checkpoint of the training key (``<out_dir>/checkpoints/<key>``; resumes its
   ``last.ckpt``; concurrent jobs with one key train it once);
4. sample with the EMA weights, score, append the rows, log to W&B (offline by default), write the grid.

``evaluate_checkpoint`` evaluates a finished checkpoint with any sampling or evaluation settings; its training
axes come from the checkpoint itself.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .build import TRAIN_GROUPS, TRAIN_SETTINGS, ConfigError, build_experiment
from .jobs import check_launch, check_writable, cli_overrides, make_logger
from .jobs import job_dir as hydra_job_dir

__all__ = ["run", "recorded_rows", "evaluate_checkpoint", "checkpoint_cfg"]


def _label(r) -> tuple[str, str]:
    """(study, row) of a stored row or of ``{"study": exp.study, "row": exp.row}``; missing parts as in the store."""
    row = r.get("row")
    return str(r.get("study") or "adhoc"), "" if row is None or row != row else str(row)


def _label_text(label: tuple[str, str]) -> str:
    return "/".join(x for x in label if x)


def _raw_rows(path, keys: set) -> list[dict]:
    """The stored rows (parsed JSON, newest first) whose ``point_key`` is in ``keys``."""
    import json

    if not keys:
        return []
    out = []
    with open(path) as f:
        for line in f:
            if any(k in line for k in keys):
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if r.get("point_key") in keys:
                    out.append(r)
    return out[::-1]


def recorded_rows(exp, step: int) -> tuple[list[dict], list[int]]:
    """The ``ok`` rows of this point already in the store, and the evaluation seeds that have none yet.

    A point is what was measured (``point_key``: training key and step, sampler, evaluation budget and seed); the
    study and row are where it is shown. A point already measured under another label (SiT's walk row 3 is
    Table 5's VP ODE row) is not measured again: its rows are appended once more under this experiment's label,
    with ``copied_from`` naming the original label, so each study's table holds every row it asks for."""
    from ..results import append_rows, read_results
    from .evaluation import point_key

    df = read_results(exp.results)
    keys = {point_key(exp, step, s): s for s in exp.eval.seeds}
    if df.empty or "point_key" not in df:
        return [], list(exp.eval.seeds)
    ok = df[df["point_key"].isin(set(keys)) & (df["status"] == "ok")].to_dict("records")
    mine = _label({"study": exp.study, "row": exp.row})
    done = [r for r in ok if _label(r) == mine]
    have = {r["point_key"] for r in done}
    copies = []
    for r in _raw_rows(exp.results, {r["point_key"] for r in ok} - have):  # as stored (the frame makes ints floats)
        if r.get("status") != "ok" or _label(r) == mine or any(
                c["point_key"] == r["point_key"] and c["metric"] == r["metric"] for c in copies):
            continue
        c = {k: v for k, v in r.items() if k != "timestamp"}
        copies.append({**c, "study": mine[0], "row": exp.row,
                       "copied_from": c.get("copied_from") or _label_text(_label(r))})
    if copies:
        append_rows(exp.results, copies)
        for c in copies:
            print(f"[ablate] measured before as {c['copied_from']}: recorded for {_label_text(mine)} too (no new "
                  "evaluation)")
    done += copies
    missing = [s for k, s in keys.items() if k not in {r["point_key"] for r in done}]
    return done, missing


def run(cfg: DictConfig, job_dir: str | Path | None = None) -> dict:
    """One run (train or reuse, then evaluate). ``job_dir``: where the sample grid and W&B files go
    (default: the Hydra job's output directory). Returns ``{"rows", "samples", "skipped", "checkpoint"}``.

    Evaluation seeds already recorded for this point are not evaluated again (``redo=true`` does)."""
    from .evaluation import evaluate
    from .train import train_or_reuse

    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg.threads))
    exp = build_experiment(cfg)
    check_launch(exp.trainer)
    job_dir = Path(job_dir) if job_dir is not None else hydra_job_dir()
    ckpt = Path(exp.out_dir) / "checkpoints" / exp.train_key / "final.pt"
    done = []
    if not exp.redo and exp.eval.every_n_steps == 0:
        done, missing = recorded_rows(exp, exp.trainer.steps)
        for r in done:
            print(f"[ablate] already in {exp.results}: {r['metric']} = {r['value']:.4f} (eval seed "
                  f"{r['eval_seed']}); redo=true evaluates it again")
        if not missing:
            return {"rows": done, "samples": None, "skipped": True, "checkpoint": str(ckpt)}
        exp.eval.seeds = missing
    check_writable(Path(exp.out_dir))
    check_writable(job_dir)
    logger = make_logger(exp, job_dir, name=f"{exp.study or 'adhoc'}-{exp.train_key}-{exp.sampler.tag}")
    training, ema_state, info = train_or_reuse(exp, logger, job_dir=job_dir)
    out = evaluate(exp, training, ema_state, info, job_dir=job_dir, logger=logger)
    return {**out, "rows": done + out["rows"], "skipped": False, "checkpoint": str(ckpt)}


def _override_groups(overrides: list[str]) -> dict[str, str]:
    """Top-level key -> the override that set it (``interpolant=vp``, ``model.depth=2`` -> model)."""
    out = {}
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        out.setdefault(key.split(".")[0], o)
    return out


def checkpoint_cfg(cfg: DictConfig, stored: dict, overrides: list[str]) -> DictConfig:
    """``cfg`` with the training groups and settings of a checkpoint (``stored["groups"]``). A command-line
    override of a training group that contradicts the checkpoint is refused, naming both values."""
    groups = stored.get("groups") or {}
    given = _override_groups(overrides)
    cfg = cfg.copy()
    for key in (*TRAIN_GROUPS, *TRAIN_SETTINGS):
        if key not in groups:
            continue
        mine = cfg.get(key)
        mine = OmegaConf.to_container(mine, resolve=True) if isinstance(mine, DictConfig) else mine
        if key in given and mine != groups[key]:
            raise ConfigError(f"{given[key]} contradicts the checkpoint, which was trained with {key}="
                              f"{_short(groups[key])}; only sampling and evaluation settings can be chosen "
                              f"for a trained checkpoint (drop the {key} override)")
        with _writable(cfg):
            cfg[key] = OmegaConf.create(groups[key]) if isinstance(groups[key], dict) else groups[key]
    return cfg


def _short(v) -> str:
    """A stored group as its owner describes it (``vp {'beta_min': 0.1, 'beta_max': 20.0}``)."""
    if not isinstance(v, dict):
        return repr(v)
    try:
        from hydra.utils import instantiate

        obj = instantiate(v)
        obj = getattr(obj, "func", obj) if not hasattr(obj, "describe") else obj
        d = dict(obj.describe()) if hasattr(obj, "describe") else {"name": obj if isinstance(obj, str) else v}
    except Exception:
        d = {k: x for k, x in v.items() if not k.startswith("_")}
    name = d.pop("name", None) or d.pop("kind", "?")
    return f"{name} {d}" if d else str(name)


class _writable:
    def __init__(self, cfg):
        self.cfg = cfg

    def __enter__(self):
        self.flag = OmegaConf.is_struct(self.cfg)
        OmegaConf.set_struct(self.cfg, False)

    def __exit__(self, *exc):
        OmegaConf.set_struct(self.cfg, self.flag)


def evaluate_checkpoint(cfg: DictConfig, checkpoint: str, job_dir: Path | None = None,
                        overrides: list[str] | None = None) -> dict:
    """Evaluate ``checkpoint`` (a ``final.pt`` or a ``last.ckpt``) with the sampling and evaluation settings of
    ``cfg``; the training axes, key and steps come from the checkpoint."""
    from .evaluation import checkpoint_weights, evaluate
    from .train import build_training

    ema, step, stored = checkpoint_weights(checkpoint)
    if not stored.get("groups"):
        raise ConfigError(f"{checkpoint} stores no training config (written by an older ablate): its training "
                          "axes cannot be known; retrain it, or load its weights with ablate.models")
    cfg = checkpoint_cfg(cfg, stored, cli_overrides() if overrides is None else overrides)
    exp = build_experiment(cfg)
    if stored.get("train_key") and stored["train_key"] != exp.train_key:
        raise ConfigError(f"the checkpoint's training key {stored['train_key']} differs from the rebuilt one "
                          f"{exp.train_key}: its stored config no longer builds the same training (another ablate "
                          "version?)")
    job_dir = Path(job_dir) if job_dir is not None else hydra_job_dir()
    check_writable(job_dir)
    training = build_training(exp)
    logger = make_logger(exp, job_dir, name=f"eval-{exp.train_key}-{exp.sampler.tag}")
    info = {"train_key": exp.train_key, "reused": True, "train_steps": int(step or exp.trainer.steps)}
    return evaluate(exp, training, ema, info, job_dir=job_dir, logger=logger)
