"""W&B dashboards as code: one saved workspace per study, built with W&B's ``wandb-workspaces`` library.

    python -m ablate.studies dashboard --study sit_walk --entity E --project P [--scale cpu] [--override K=V]
        [--dry-run]
    python -m ablate.studies dashboard study=sit_walk entity=E project=P          # the same, Hydra-style

The workspace is derived from the study, not written by hand. Every row of ``experiments/<study>.yaml`` is composed
into the config a run of that row has (:func:`ablate.studies.catalog.compose_row`, same scale, same extra
overrides) and built (:func:`ablate.pipeline.build.build_experiment`), and

- the *varied axes* are the axes of :meth:`Experiment.axes` whose values differ across the rows (the model's
  architecture overrides are axes too: ``model_depth`` when a study sizes the model by overrides);
- every metric key comes from :mod:`ablate.pipeline.metric_names`, the module the logging code imports its names
  from, with the evaluation budget (``eval.num_samples``) of the composed rows: a renamed metric, or another
  budget, renames the panels' keys too. Config keys are axis names, which a run writes into its W&B config.

Sections (each named ``<study>: ...``): *table* (final FID per setting; the runs table is pinned to the row id,
the varied axes and the final FID), *FID vs GFLOPs* (model, sample, train; and the guidance scale for a guidance
study), *FID vs NFE*, *training* (FID and loss over training steps), *axes* (parallel coordinates over every axis
and the final FID) and *samples* (the latest sample grid of each run). The run set keeps the runs of the study's
W&B group (``cfg.study``) and groups them by the varied axes, leaving out those implied by others and those on an
x axis (NFE, training steps, guidance), so each setting gets one colour in every panel and runs that differ only
along an x axis join into one curve (FID vs NFE per sampler and coefficient). When that grouping needs more than
two nested levels and separates every row anyway, the row id groups the same runs in one level.

``--dry-run`` prints the specification (JSON) without any network access. :func:`build_spec` returns it as plain
dicts (``"config:<key>"``, ``"summary:<key>"``, ``"history:<key>"`` name every reference), :func:`to_workspace`
turns it into ``wandb_workspaces`` objects, :func:`referenced_keys` lists what it reads (the tests check each
against real offline runs), and :func:`logged_keys` reads what an offline run logged from its ``.wandb`` file.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterable, Sequence

from ..pipeline import metric_names as mn
from .wandb_offline import logged_keys

__all__ = ["spec_for_study", "build_spec", "to_workspace", "referenced_keys", "study_configs", "study_axes",
           "varied_axes", "independent_axes", "logged_keys", "main"]

# Axes that are plotted on an x axis somewhere: grouping by them would split a curve into single points.
X_AXES = ("sampler_steps", "nfe_budget", "train_steps", "guidance")
LABELS = ("sampler_tag", "row")  # names of a run, not axes: they change with every row
PANEL_TYPES = ("bar", "scatter", "line", "parallel", "media")


# ---------------------------------------------------------------------------------------------------------------
# The study's rows as composed configs
# ---------------------------------------------------------------------------------------------------------------


def study_configs(study: str, scale: str = "cpu", extra: Sequence[str] = ()) -> tuple[dict, list]:
    """(study metadata, [(row id, composed DictConfig)]) for every row the study runs at ``scale``.

    Each config is composed by :func:`ablate.studies.catalog.compose_row`, the function that gives the row's run
    config, with the same ``extra`` overrides the runs were launched with; rows the study skips at this scale are
    left out.
    """
    from .catalog import compose_row, load_study

    st = load_study(study)
    if scale == "paper":  # the axes need no data and no reference batch: fill what the user did not give
        given = {e.partition("=")[0] for e in extra}
        extra = [*extra, *(f"{k}=unused" for k in ("data.root", "data.reference_root", "eval.reference")
                           if k not in given)]
    rows = [(r.id, compose_row(st, r, scale, extra=list(extra))) for r in st.rows if not r.skip_reason(scale)]
    if not rows:
        raise ValueError(f"study {study!r} runs no row at scale {scale!r}; nothing to plot")
    return {"name": st.name, "metric": st.metric, "plot": st.plot}, rows


def study_axes(configs: Sequence[Any]) -> list[dict[str, Any]]:
    """Per row: :meth:`ablate.pipeline.build.Experiment.axes` of the built config (what its W&B config holds)."""
    from ..pipeline.build import build_experiment

    return [build_experiment(c).axes() for c in configs]


def varied_axes(axes_per_row: Sequence[dict[str, Any]], allow_empty: bool = False) -> list[str]:
    """The axes whose values differ across the rows, in :meth:`ablate.pipeline.build.Experiment.axes` order.

    Labels (``sampler_tag``, ``row``) are not axes: they vary with everything and count only when nothing else does.
    """
    if not axes_per_row:
        raise ValueError("no rows: a study needs at least one row to have varied axes")
    names = list(axes_per_row[0])
    varied = [a for a in names if len({_value(r.get(a)) for r in axes_per_row}) > 1]
    primary = [a for a in varied if a not in LABELS]
    return primary if primary or allow_empty else varied


def independent_axes(axes_per_row: Sequence[dict[str, Any]], candidates: Sequence[str]) -> list[str]:
    """The candidates that are not implied by earlier ones across the rows (e.g. ``solver`` when each sampler has
    one solver in the study): an axis is kept when two rows agree on every axis kept so far but differ on it."""
    kept: list[str] = []
    for a in candidates:
        seen: dict[tuple, str] = {}
        for r in axes_per_row:
            key = tuple(_value(r.get(k)) for k in kept)
            if seen.setdefault(key, _value(r.get(a))) != _value(r.get(a)):
                kept.append(a)
                break
    return kept


def _grouping(axes_per_row: Sequence[dict[str, Any]], varied: Sequence[str]) -> list[str]:
    """The run-set grouping: the independent varied axes that are not plotted on an x axis. When that takes more
    than two nested levels and still separates every row, the row id (one level) groups the same runs."""
    grouping = independent_axes(axes_per_row, [a for a in varied if a not in X_AXES and a not in LABELS])
    ids = [r.get("row") for r in axes_per_row]
    distinct = len({tuple(_value(r.get(a)) for a in grouping) for r in axes_per_row}) == len(axes_per_row)
    if len(grouping) > 2 and distinct and None not in ids and len(set(ids)) == len(ids):
        return ["row"]
    return grouping


def _value(v: Any) -> str:
    return json.dumps(v, default=str, sort_keys=True)


# ---------------------------------------------------------------------------------------------------------------
# The specification (plain dicts; every key reference is "config:", "summary:" or "history:" + the logged name)
# ---------------------------------------------------------------------------------------------------------------


def _c(key: str) -> str:
    return f"config:{key}"


def _s(key: str) -> str:
    return f"summary:{key}"


def _h(key: str) -> str:
    return f"history:{key}"


def build_spec(meta: dict, axes_per_row: Sequence[dict[str, Any]], num_samples: Iterable[int], *,
               entity: str | None = None, project: str | None = None, scale: str = "cpu") -> dict:
    """The workspace for one study, as plain dicts mirroring the ``wandb-workspaces`` API.

    ``meta``: the study's ``name`` (its W&B group), ``metric`` (``fid``) and ``plot`` (``nfe``, ``gflops``,
    ``cfg`` or None: the study's headline x axis); ``axes_per_row``:
    :meth:`ablate.pipeline.build.Experiment.axes` of each row's config; ``num_samples``: the evaluation budgets of
    the rows (one metric key each).
    """
    name, metric = meta["name"], meta.get("metric") or "fid"
    all_axes = list(axes_per_row[0])
    varied = varied_axes(axes_per_row)
    grouping = _grouping(axes_per_row, varied)
    budgets = sorted({int(n) for n in num_samples})
    fids = [mn.metric_key(metric, n) for n in budgets]  # the tag-free alias every run logs
    label = {mn.metric_key(metric, n): f"{metric.upper()}-{mn.count_label(n)}" for n in budgets}
    by = " / ".join(grouping) or "run"

    table = [{"type": "bar", "title": f"final {label[k]} per setting ({by})", "metrics": [_s(k)]} for k in fids]
    compute = [
        {"type": "scatter", "title": f"{label[k]} vs {what} GFLOPs", "x": _s(key), "y": _s(k), "log_x": True}
        for k in fids for what, key in (("model", mn.MODEL_GFLOPS), ("sample", mn.SAMPLE_GFLOPS),
                                         ("train", mn.TRAIN_GFLOPS))
    ]
    if meta.get("plot") == "cfg":
        compute += [{"type": "scatter", "title": f"{label[k]} vs guidance scale", "x": _c("guidance"), "y": _s(k)}
                    for k in fids]
    nfe = [{"type": "line", "title": f"{label[k]} vs NFE, per {by}", "x": _h(mn.NFE), "y": [_h(k)],
            "log_x": True} for k in fids]
    training = [{"type": "line", "title": f"{label[k]} over training steps, per {by}", "x": _h(mn.GLOBAL_STEP),
                 "y": [_h(k)]} for k in fids]
    training.append({"type": "line", "title": "training loss", "x": _h(mn.GLOBAL_STEP), "y": [_h(mn.TRAIN_LOSS)]})
    every_axis = [{"type": "parallel", "title": f"every axis -> final {', '.join(label.values())}",
                   "columns": [_c(a) for a in varied] + [_c(a) for a in all_axes if a not in varied]
                   + [_s(k) for k in fids]}]
    samples = [{"type": "media", "title": "latest sample grid of each run", "keys": [_h(mn.SAMPLES)]}]

    m = metric.upper()
    sections = [("table", table), (f"{m} vs GFLOPs", compute), (f"{m} vs NFE", nfe), ("training", training),
                ("axes", every_axis), ("samples", samples)]
    if meta.get("plot") == "nfe":  # the study's headline figure right after its table
        sections.insert(1, sections.pop(2))
    first = [a for a in ("row",) if a in all_axes and a not in varied]
    return {
        "entity": entity,
        "project": project,
        "name": f"ablate: {name} ({scale})",
        "study": name,
        "scale": scale,
        "varied_axes": varied,
        "runset": {
            "group": name,
            "groupby": [_c(a) for a in grouping],
            "pinned_columns": [_c(a) for a in first + varied] + [_s(k) for k in fids],
            "max_runs": max(10, 5 * len(axes_per_row)),  # room for a few seeds per row
        },
        "sections": [{"name": f"{name}: {title}", "panels": panels} for title, panels in sections],
    }


def referenced_keys(spec: dict) -> set[str]:
    """Every ``config:``/``summary:``/``history:`` reference of the spec (run-set grouping and columns too)."""
    refs = set(spec["runset"]["groupby"]) | set(spec["runset"]["pinned_columns"])
    for section in spec["sections"]:
        for p in section["panels"]:
            for field in ("x", "y", "columns", "keys", "metrics"):
                v = p.get(field)
                refs |= set(v) if isinstance(v, list) else ({v} if v else set())
    return refs


# ---------------------------------------------------------------------------------------------------------------
# wandb-workspaces objects
# ---------------------------------------------------------------------------------------------------------------


def _import_workspaces():
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as e:
        raise ImportError(
            "the W&B workspace builder needs the optional extra: pip install 'ablate[dashboard]' "
            f"(wandb-workspaces); --dry-run prints the specification without it ({e})"
        ) from e
    return ws, wr


def _split(ref: str) -> tuple[str, str]:
    section, _, key = ref.partition(":")
    if section not in ("config", "summary", "history") or not key:
        raise ValueError(f"bad key reference {ref!r}: expected 'config:', 'summary:' or 'history:' + a key")
    return section, key


def _scatter_axis(ref: str, wr):
    section, key = _split(ref)
    return wr.Config(key) if section == "config" else wr.SummaryMetric(key)


def _line_axis(ref: str) -> str:
    section, key = _split(ref)
    if section != "history":
        raise ValueError(f"a line panel plots logged history, not {ref!r}")
    return key


def _panel(p: dict, ws, wr):
    kind = p["type"]
    if kind == "bar":
        return wr.BarPlot(title=p["title"], metrics=[_scatter_axis(m, wr) for m in p["metrics"]], orientation="v")
    if kind == "scatter":
        return wr.ScatterPlot(title=p["title"], x=_scatter_axis(p["x"], wr), y=_scatter_axis(p["y"], wr),
                              log_x=p.get("log_x"))
    if kind == "line":
        return wr.LinePlot(title=p["title"], x=_line_axis(p["x"]), y=[_line_axis(y) for y in p["y"]],
                           log_x=p.get("log_x"), plot_type="line")
    if kind == "parallel":
        return wr.ParallelCoordinatesPlot(
            title=p["title"], columns=[wr.ParallelCoordinatesPlotColumn(metric=_scatter_axis(c, wr))
                                       for c in p["columns"]])
    if kind == "media":
        return wr.MediaBrowser(title=p["title"], media_keys=[_line_axis(k) for k in p["keys"]], mode="gallery",
                               gallery_axis="run")
    raise ValueError(f"unknown panel type {kind!r}; valid: {list(PANEL_TYPES)}")


def to_workspace(spec: dict):
    """The ``wandb_workspaces.workspaces.Workspace`` of a spec (built locally; ``.save()`` uploads it)."""
    ws, wr = _import_workspaces()
    rs = spec["runset"]
    for field in ("entity", "project"):
        if not spec.get(field):
            raise ValueError(f"a W&B workspace needs {field}=<name> (got {spec.get(field)!r})")
    return ws.Workspace(
        entity=spec["entity"],
        project=spec["project"],
        name=spec["name"],
        sections=[ws.Section(name=s["name"], panels=[_panel(p, ws, wr) for p in s["panels"]], is_open=True)
                  for s in spec["sections"]],
        settings=ws.WorkspaceSettings(max_runs=rs["max_runs"]),
        runset_settings=ws.RunsetSettings(
            filters=[ws.Metric("Group") == rs["group"]],
            groupby=[ws.Config(_split(g)[1]) for g in rs["groupby"]],
            pinned_columns=list(rs["pinned_columns"]),
        ),
    )


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def spec_for_study(study: str, *, scale: str = "cpu", extra: Sequence[str] = (), entity: str | None = None,
                   project: str | None = None) -> dict:
    """Compose every row of the study and build its workspace spec."""
    meta, rows = study_configs(study, scale, extra)
    return build_spec(meta, study_axes([cfg for _, cfg in rows]), [cfg.eval.num_samples for _, cfg in rows],
                      entity=entity, project=project, scale=scale)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ablate.studies dashboard", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", required=True, help="a study name (experiments/<study>.yaml)")
    p.add_argument("--entity", help="W&B entity that owns the project (required unless --dry-run)")
    p.add_argument("--project", help="W&B project the runs were synced to (required unless --dry-run)")
    p.add_argument("--scale", default="cpu", help="the study scale the runs used (default: cpu)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override the runs were launched with (e.g. eval.num_samples=5000); repeatable")
    p.add_argument("--dry-run", action="store_true", help="print the specification as JSON; no network")
    # Hydra-style `study=sit_walk entity=E` (and `dry_run=true`) become the flags above.
    flags = {"study", "entity", "project", "scale", "override"}
    norm = []
    for a in argv:
        k, eq, v = a.partition("=")
        if eq and not a.startswith("-") and k in flags:
            norm += [f"--{k}", v]
        elif eq and not a.startswith("-") and k in ("dry_run", "dry-run"):
            norm += ["--dry-run"] if v.lower() in ("1", "true", "yes") else []
        else:
            norm.append(a)
    return p.parse_args(norm)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    spec = spec_for_study(args.study, scale=args.scale, extra=args.override, entity=args.entity,
                          project=args.project)
    if args.dry_run:
        print(json.dumps(spec, indent=2))
        try:  # build (never save) the workspace objects too, when the extra is installed: the spec is valid
            if spec["entity"] and spec["project"]:
                to_workspace(spec)
                print("[ablate] wandb-workspaces built the workspace (not saved: --dry-run)", file=sys.stderr)
        except ImportError:
            pass
        return 0
    workspace = to_workspace(spec)
    workspace.save()
    print(f"[ablate] saved workspace {spec['name']!r}: {workspace.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
