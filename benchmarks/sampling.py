"""Sampling benchmark: wall time per NFE and NFE per image of every sampler on one network, side by side.

All samplers run on the same tiny-8 network (the EMA weights of a finished tiny-8 linear/velocity checkpoint
under ``<out_dir>/checkpoints`` when one exists, else random initialisation: timing does not depend on the
weights), from the same per-image seeds, with the repeats interleaved (repeat r times every sampler before
repeat r + 1), so a slow phase of a shared machine slows them all alike. NFE is what the sampler's own
:class:`~ablate.sampling.NFECounter` counted, never inferred.

Measured:

- every sampler at (about) equal NFE: ``ode_euler``, ``ode_heun``, ``ode_dopri5`` at its tolerances (adaptive:
  NFE counted), ``sde_em``, ``sde_heun``, ``ddpm``, ``ddim`` (the discrete samplers run the same network
  with the DDPM index as its time input: timing only);
- the SiT-reference SDE cost: :class:`SiTReferenceEM` evaluates the network twice per step (once for the
  drift, once for the score, as SiT's ``sde_drift = drift(x, t, model) + diffusion * score(x, t, model)`` does,
  the last step included), against ablate's one evaluation per step (SiT eq. 9 gives both from one output);
- ``sde_em`` with 250 steps and the mean last step: 250 NFE (the SiT reference: 500);
- the cost of classifier-free guidance (scale 1.5 vs 1.0 at equal NFE: one NFE runs a doubled batch);
- options: bf16 autocast and ``torch.compile`` of the network, for speed and for their effect on FID
  (:func:`fid_effect`: the same seeds sampled in fp32, bf16, compiled; FID by ``ablate.metrics``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import common
import torch

from ablate.sampling import PerImageNoise, SDESampler, build_sampler

__all__ = ["SiTReferenceEM", "BatchNoise", "load_network", "sampler_suite", "bench_samplers", "fid_effect"]

NULL_CLASS = 10  # tiny-8 on digits: classes 0..9, the null label of classifier-free guidance is 10


class SiTReferenceEM(SDESampler):
    """Euler-Maruyama at the SiT reference's cost: velocity and score from two separate network evaluations.

    SiT (Ma et al. 2024) eq. 4 drift f = v - w s / 2 needs v and s; the SiT code gets them by calling the model
    once for ``drift`` and once more inside ``score`` (which converts a second velocity output by eq. 9), at
    every step and at the last (mean) step. The result equals :class:`~ablate.sampling.SDESampler`'s (same
    input, same output); only the number of network evaluations doubles.
    """

    def drift(self, model, x, t: float, w: float, y):
        pred_v, c = self.field.evaluate(model, x, t, y)
        v = self.field.to(pred_v, "velocity", x, c)
        pred_s, _ = self.field.evaluate(model, x, t, y)  # the second evaluation the reference spends
        return v - 0.5 * w * self.field.to(pred_s, "score", x, c), v

    @property
    def expected_nfe(self) -> int:
        return 2 * (self.steps - 1) + 2 * (self.last_step != "none")

    @property
    def tag(self) -> str:
        return "sit_ref_" + super().tag


class BatchNoise:
    """A sampler drawing its step noise from one generator for the whole batch (``generator=``) instead of the
    per-image streams the evaluation uses (:class:`~ablate.sampling.PerImageNoise`, one small generator per
    image and step): isolates the cost of the SDE step itself from the cost of reproducible per-image noise."""

    def __init__(self, sampler):
        self.sampler, self.guidance_scale = sampler, sampler.guidance_scale
        self.tag, self.expected_nfe = sampler.tag + "-batch_noise", sampler.expected_nfe

    def __call__(self, model, z, y=None, *, noise=None, **kwargs):
        g = torch.Generator(device=z.device).manual_seed(0)
        return self.sampler(model, z, y, generator=g)


def _find_checkpoint(out_dir: str | os.PathLike | None = None) -> Path | None:
    """A finished tiny-8 continuous linear/velocity checkpoint (final.pt) under ``<out_dir>/checkpoints``."""
    root = Path(out_dir or os.environ.get("ABLATE_OUT", common.ROOT / "runs")) / "checkpoints"
    for final in sorted(root.glob("*/final.pt")):
        try:
            cfg = json.loads((final.parent / "train_config.json").read_text())
        except (OSError, ValueError):
            continue
        m = cfg.get("model", {})
        if (m.get("name") == "tiny-8" and not m.get("learn_sigma") and cfg.get("time", {}).get("name") == "continuous"
                and cfg.get("prediction", {}).get("name") == "velocity"
                and cfg.get("interpolant", {}).get("_target_", "").endswith("Linear")):
            return final
    return None


def load_network(checkpoint: str | os.PathLike | None = "auto", device="cpu"):
    """(tiny-8 velocity network in eval mode, description of its weights). ``checkpoint``: a final.pt, "auto"
    (:func:`_find_checkpoint`) or None (random initialisation, seed 0)."""
    from ablate.models import build_model
    from ablate.pipeline.checkpointing import load_checkpoint

    torch.manual_seed(0)
    net = build_model("tiny-8", learn_sigma=False)
    path = _find_checkpoint() if checkpoint == "auto" else checkpoint
    source = "random init (seed 0; the zero-initialised adaLN and output layers redrawn from N(0, 0.02^2))"
    if path is not None:
        net.load_state_dict(load_checkpoint(path)["ema"])
        source = f"EMA weights of {Path(path).parent.name}/final.pt"
    else:
        # DiT zero-initialises its adaLN modulation and output layers, so a fresh network outputs exactly 0 for
        # every input: any precision would then give identical samples. Redraw those tensors so it does not.
        with torch.no_grad():
            for p in net.parameters():
                if not p.any():
                    p.normal_(0.0, 0.02)
    return net.eval().to(device), source


def paper_time_model(net, precision: str = "fp32"):
    """model(x, t, y) in paper time (the checkpoint's network time is t); ``bf16``: under bf16 autocast,
    returned in float32."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; valid choices: ['fp32', 'bf16']")
    dev = next(net.parameters()).device.type if isinstance(net, torch.nn.Module) else "cpu"

    def model(x, t, y=None):
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return net(x, t, y).float()

    return model


def sampler_suite(nfe: int = 50, tolerances=((1e-3, 1e-3), (1e-6, 1e-3))) -> dict:
    """name -> (sampler, discrete?) at about ``nfe`` evaluations each (dopri5: counted at each tolerance)."""
    from ablate.transport.ddpm import build_ddpm

    ddpm = build_ddpm(1000, learn_sigma=False)
    lin = dict(interpolant="linear", prediction="velocity")
    suite = {
        f"ode_euler-{nfe}": (build_sampler("ode_euler", steps=nfe, **lin), False),
        f"ode_heun-{nfe // 2}": (build_sampler("ode_heun", steps=nfe // 2, **lin), False),
    }
    for atol, rtol in tolerances:
        suite[f"ode_dopri5-atol{atol:g}-rtol{rtol:g}"] = (
            build_sampler("ode_dopri5", atol=atol, rtol=rtol, **lin), False)
    suite[f"sde_em-{nfe}"] = (build_sampler("sde_em", steps=nfe, **lin), False)
    suite[f"sde_em-{nfe}-batch_noise"] = (BatchNoise(suite[f"sde_em-{nfe}"][0]), False)
    suite[f"sde_heun-{nfe // 2 + 1}"] = (build_sampler("sde_heun", steps=nfe // 2 + 1, **lin), False)
    suite[f"sit_reference_em-{nfe}"] = (_sit_reference(nfe), False)
    suite[f"ddpm-{nfe}"] = (build_sampler("ddpm", steps=nfe, ddpm=ddpm), True)
    suite[f"ddim-{nfe}"] = (build_sampler("ddim", steps=nfe, ddpm=ddpm), True)
    suite[f"ode_euler-{nfe}-cfg1.5"] = (build_sampler("ode_euler", steps=nfe, guidance_scale=1.5,
                                                      null_class=NULL_CLASS, **lin), False)
    return suite


def _sit_reference(steps: int) -> SiTReferenceEM:
    from ablate.transport.diffusion import get_diffusion
    from ablate.transport.interpolants import get_interpolant

    interp = get_interpolant("linear")
    return SiTReferenceEM(interp, "velocity", get_diffusion("w_kl", interp, 1.0), "em", steps)


def _run(sampler, model, batch: int, seed: int = 0, device="cpu"):
    noise = PerImageNoise([seed * 1_000_003 + i for i in range(batch)], (1, 8, 8), device=device)
    y = torch.arange(batch, device=device) % 10
    with torch.no_grad():
        out = sampler(model, noise.z, y, noise=noise)
    common.sync(device)
    return out


def bench_samplers(net, suite: dict, batch: int, repeats: int, model_fns: dict | None = None,
                   device="cpu") -> dict:
    """Interleaved timing of every sampler of ``suite`` (plus ``model_fns``: extra name -> (sampler, model)
    pairs such as bf16 or compiled networks); returns name -> record with wall s per batch / per NFE / per
    image, images/s and the counted NFE per image, each as min / median / max over ``repeats``."""
    cont = paper_time_model(net)
    disc = paper_time_model(net)  # the DDPM index enters the same time embedding: same cost per call
    jobs = {name: (s, disc if is_disc else cont) for name, (s, is_disc) in suite.items()}
    jobs.update(model_fns or {})
    warm = {"ode_euler": build_sampler("ode_euler", steps=2, interpolant="linear", prediction="velocity")}
    for s, m in jobs.values():  # warm-up of every network variant (allocator, guidance, compilation): 2 NFE
        if (id(m), s.guidance_scale) not in warm:
            w = warm["ode_euler"] if s.guidance_scale == 1.0 else build_sampler(
                "ode_euler", steps=2, interpolant="linear", prediction="velocity",
                guidance_scale=s.guidance_scale, null_class=NULL_CLASS)
            _run(w, m, batch, device=device)
            warm[(id(m), s.guidance_scale)] = w
    walls: dict[str, list[float]] = {k: [] for k in jobs}
    nfes: dict[str, int] = {}
    for _ in range(repeats):
        for name, (s, m) in jobs.items():
            t0 = time.perf_counter()
            out = _run(s, m, batch, device=device)
            walls[name].append(time.perf_counter() - t0)
            nfes[name] = out.nfe
    res = {}
    for name, w in walls.items():
        s, nfe = jobs[name][0], nfes[name]
        res[name] = dict(tag=s.tag, nfe_per_image=nfe, expected_nfe=getattr(s, "expected_nfe", None), batch=batch,
                         wall_s=common.spread(w), wall_per_nfe_s=common.spread([x / nfe for x in w]),
                         images_per_s=common.spread([batch / x for x in w]),
                         _walls=w)
    return res


def ratio(res: dict, a: str, b: str) -> dict:
    """Per-repeat wall-time ratios a / b (paired: same repeat round), min / median / max."""
    return common.spread([x / y for x, y in zip(res[a]["_walls"], res[b]["_walls"], strict=True)])


def nfe_250(batch: int = 4) -> dict:
    """Counted NFE of a 250-step Euler-Maruyama run with the mean last step: ablate vs the SiT reference."""
    net, _ = load_network(None)
    model = paper_time_model(net)
    ours = build_sampler("sde_em", steps=250, interpolant="linear", prediction="velocity", last_step="mean")
    return dict(steps=250, last_step="mean", ablate_nfe=_run(ours, model, batch).nfe,
                sit_reference_nfe=_run(_sit_reference(250), model, batch).nfe)


def fid_effect(net, source: str, *, num_samples: int, steps: int, batch: int, compile_model: bool,
               device="cpu") -> dict:
    """FID of the same seeds sampled with ``ode_heun`` (``steps`` steps) in fp32, bf16 autocast and (with
    ``compile_model``) compiled; plus the largest pixel difference from the fp32 samples."""
    from ablate.metrics import compute_metrics
    from ablate.pipeline.evaluation import generate

    sampler = build_sampler("ode_heun", steps=steps, interpolant="linear", prediction="velocity")
    variants = {"fp32": paper_time_model(net), "bf16": paper_time_model(net, "bf16")}
    if compile_model:
        variants["fp32+compile"] = paper_time_model(torch.compile(net))
        variants["bf16+compile"] = paper_time_model(torch.compile(net), "bf16")
    out, ref = {}, None
    for name, model in variants.items():
        t0 = time.perf_counter()
        imgs, _, nfe = generate(model, sampler, num_samples=num_samples, batch_size=batch, shape=(1, 8, 8),
                                num_classes=10, seed=0, progress=False, device=device)
        wall = time.perf_counter() - t0
        fid = compute_metrics(imgs, "digits/test")["fid"]
        ref = imgs if ref is None else ref
        out[name] = dict(fid=fid, sample_wall_s=wall, nfe_per_image=nfe,
                         max_abs_diff_vs_fp32=float((imgs - ref).abs().max()))
    return dict(weights=source, sampler=sampler.tag, num_samples=num_samples, reference="digits/test",
                variants=out)


def run(quick: bool = True, *, batch: int | None = None, repeats: int | None = None, nfe: int = 50,
        compile_model: bool | None = None, fid_samples: int | None = None, fid_steps: int | None = None,
        checkpoint="auto", tolerances=((1e-3, 1e-3), (1e-6, 1e-3)), device="cpu") -> dict:
    """The whole sampling benchmark (quick: batch 32, 3 repeats, no compile, FID over 200 samples)."""
    batch = batch or (32 if quick else 256)
    repeats = repeats or (3 if quick else 5)
    compile_model = (not quick) if compile_model is None else compile_model
    load0 = common.loadavg()
    net, source = load_network(checkpoint, device)
    extra = {f"ode_euler-{nfe}-bf16": (build_sampler("ode_euler", steps=nfe, interpolant="linear",
                                                      prediction="velocity"), paper_time_model(net, "bf16"))}
    compile_cold_s = None
    if compile_model:
        cnet = torch.compile(net)
        t0 = time.perf_counter()
        _run(extra[f"ode_euler-{nfe}-bf16"][0], paper_time_model(cnet), batch, device=device)
        compile_cold_s = time.perf_counter() - t0
        euler = extra[f"ode_euler-{nfe}-bf16"][0]
        extra[f"ode_euler-{nfe}-compile"] = (euler, paper_time_model(cnet))
        extra[f"ode_euler-{nfe}-bf16+compile"] = (euler, paper_time_model(cnet, "bf16"))
    suite = sampler_suite(nfe, tolerances)
    res = bench_samplers(net, suite, batch, repeats, extra, device)
    e = f"ode_euler-{nfe}"
    ratios = {
        "sde_em / ode_euler (wall, equal steps)": ratio(res, f"sde_em-{nfe}", e),
        "sde_em, one batch generator / ode_euler (wall, equal steps)": ratio(res, f"sde_em-{nfe}-batch_noise", e),
        "sit_reference_em / ode_euler (wall, equal steps)": ratio(res, f"sit_reference_em-{nfe}", e),
        "sit_reference_em / sde_em (wall, equal steps)": ratio(res, f"sit_reference_em-{nfe}", f"sde_em-{nfe}"),
        "cfg1.5 / cfg1.0 (wall, equal NFE)": ratio(res, f"{e}-cfg1.5", e),
        "fp32 / bf16 (speed-up of bf16)": ratio(res, e, f"{e}-bf16"),
    }
    if compile_model:
        ratios["fp32 / compile (speed-up)"] = ratio(res, e, f"{e}-compile")
        ratios["fp32 / bf16+compile (speed-up)"] = ratio(res, e, f"{e}-bf16+compile")
    sde_ratio = ratios["sde_em / ode_euler (wall, equal steps)"]["median"]
    acceptance = dict(
        sde_nfe=res[f"sde_em-{nfe}"]["nfe_per_image"], euler_nfe=res[e]["nfe_per_image"],
        sde_over_euler_wall_median=sde_ratio, within_10_percent=abs(sde_ratio - 1) <= 0.10, **nfe_250())
    fid = fid_effect(net, source, num_samples=fid_samples or (200 if quick else 1000),
                     steps=fid_steps or (10 if quick else 25), batch=min(batch * 4, 500),
                     compile_model=compile_model, device=device)
    for r in res.values():
        r.pop("_walls")
    return dict(weights=source, batch=batch, repeats=repeats, nfe=nfe, samplers=res, ratios=ratios,
                acceptance=acceptance, compile_cold_start_s=compile_cold_s, fid_effect=fid,
                contention=common.contention(load0, common.loadavg()),
                note=None if not quick else "quick mode: small batch, few repeats, FID over few samples")


def _cold(s: float | None) -> str:
    return "not run (quick mode; `--compile` or full mode)" if s is None else f"{s:.1f} s"


def markdown(rep: dict) -> list[str]:
    lines = [f"## Sampling (tiny-8, batch {rep['batch']}, {rep['repeats']} interleaved repeats; weights: "
             f"{rep['weights']})", "",
             "| sampler | tag | NFE/image (counted) | wall s / batch min / med / max | ms per NFE (median) "
             "| images/s (median) |", "|---|---|---|---|---|---|"]
    for name, r in rep["samplers"].items():
        w = r["wall_s"]
        lines.append(f"| {name} | `{r['tag']}` | {r['nfe_per_image']} | {w['min']:.3f} / {w['median']:.3f} / "
                     f"{w['max']:.3f} | {1e3 * r['wall_per_nfe_s']['median']:.2f} | "
                     f"{r['images_per_s']['median']:.1f} |")
    lines += ["", "| ratio (paired per repeat) | min | median | max |", "|---|---|---|---|"]
    for k, v in rep["ratios"].items():
        lines.append(f"| {k} | {v['min']:.3f} | {v['median']:.3f} | {v['max']:.3f} |")
    a = rep["acceptance"]
    lines += ["", f"- SDE step = one network evaluation: sde_em {a['sde_nfe']} NFE vs ode_euler {a['euler_nfe']} at "
              f"{rep['nfe']} steps; wall-time ratio (median) {a['sde_over_euler_wall_median']:.3f} "
              f"({'within' if a['within_10_percent'] else 'NOT within'} 10%).",
              f"- Euler-Maruyama, {a['steps']} steps, mean last step: **{a['ablate_nfe']} NFE** "
              f"(SiT reference, two evaluations per step: {a['sit_reference_nfe']}).",
              f"- torch.compile cold start: {_cold(rep['compile_cold_start_s'])}.",
              ""]
    f = rep["fid_effect"]
    lines += [f"FID effect ({f['num_samples']} samples, `{f['sampler']}`, same seeds, vs {f['reference']}; "
              f"{f['weights']}):", "", "| variant | FID | sampling wall s | max abs pixel diff vs fp32 |",
              "|---|---|---|---|"]
    for k, v in f["variants"].items():
        lines.append(f"| {k} | {v['fid']:.3f} | {v['sample_wall_s']:.1f} | {v['max_abs_diff_vs_fp32']:.4f} |")
    c = rep["contention"]
    lines += ["", f"Load average before/after: {c['loadavg_before']:.2f} / {c['loadavg_after']:.2f}"
              f"{' (contended)' if c['contended'] else ''}. {rep['note'] or ''}", ""]
    return lines


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="sampling benchmark")
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--compile", action="store_true", default=None)
    args = ap.parse_args()
    rep = run(quick=not args.full, compile_model=args.compile)
    print("\n".join(markdown(rep)))
    print(json.dumps({k: rep[k] for k in ("ratios", "acceptance")}, indent=1, default=str))
