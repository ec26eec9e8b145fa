"""Discrete-time DDPM exactly as DiT trains and samples it (Peebles & Xie 2023, Sec. 3.1; built on
Ho et al. 2020 "DDPM" and Nichol & Dhariwal 2021 "Improved DDPM", IDDPM below).

- Schedule: linear betas from 1e-4 to 0.02 over T = 1000, scaled by 1000 / T for other T (IDDPM Sec. 2.2);
  alpha_bar_t = prod_{s<=t} (1 - beta_s). Indices t = 0..T-1 (index 0 is one noising step).
- Forward: q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)                     (DDPM eq. 4)
- Posterior: q(x_{t-1} | x_t, x_0) = N(mu~, beta~),
  beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t),
  mu~ = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t) x_0
        + (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t) x_t
  (DDPM eqs. 6-7); log beta~ is "clipped" at t = 0 to log beta~_1 (beta~_0 = 0).
- Learned variance ("learned range", IDDPM eq. 15): the network outputs [eps, v] (2C channels), v in [-1, 1],
  log Sigma = (v + 1)/2 log beta_t + (1 - (v + 1)/2) log beta~_t.
- Hybrid loss (IDDPM eq. 16): L = mean_flat((eps - eps_hat)^2) + L_vb, with L_vb computed from a
  stop-gradient eps_hat (only Sigma learns from it): L_vb = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) in bits
  per dimension for t > 0, and the discretized-Gaussian decoder NLL -log p(x_0 | x_1) for t = 0
  (DDPM Sec. 3.3), whose normal CDF is ADM's tanh approximation
  0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
  DiT uses LossType.MSE (no VB rescaling); ``rescale_vb=True`` multiplies L_vb by T/1000 (RESCALED_MSE).
- Respacing (IDDPM Sec. 4): keep a subset S of indices; the respaced betas are 1 - alpha_bar_{s_i} /
  alpha_bar_{s_{i-1}}, and the network still sees the ORIGINAL index s_i (DiT's ``_WrappedModel``).
- Sampling: ancestral p_sample (clip_denoised=False, as DiT's sample.py) and DDIM (Song et al. 2021, eq. 12);
  ``ddim_reverse_sample`` runs eq. 12 the other way (x_t -> x_{t+1}, deterministic: inversion).
- The variational bound in bits/dim (``prior_bpd``, ``calc_bpd_loop``): :mod:`ablate.transport.ddpm_bound`.

Schedule arrays are float64 and cast to the dtype of x at use. Noise replay: every loop takes the initial z
and either a ``torch.Generator`` or a sequence of per-step noises (one per step, in sampling order).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from . import ddpm_bound
from .ddpm_bound import approx_standard_normal_cdf, discretized_gaussian_log_likelihood, normal_kl  # noqa: F401
from .ddpm_schedule import linear_betas, space_timesteps  # noqa: F401
from .loss import mean_flat

__all__ = [
    "linear_betas",
    "space_timesteps",
    "GaussianDiffusion",
    "build_ddpm",
    "normal_kl",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
]


class GaussianDiffusion:
    """A DDPM with the given betas (float64). ``timestep_map[i]`` is the original index the network sees for
    this diffusion's index i (identity unless respaced). ``learn_sigma``: learned-range variance (2C outputs);
    otherwise the fixed "large" variance beta_t (beta~_1 at t = 0), DiT's non-learned default.

    Models are called as ``model(x, index, y)`` with the original integer index [B].
    """

    def __init__(self, betas, learn_sigma: bool = True, timestep_map=None, rescale_vb: bool = False):
        b = torch.as_tensor(betas, dtype=torch.float64).flatten().clone()
        if b.numel() < 2 or not bool(((b > 0) & (b <= 1)).all()):
            raise ValueError("betas must be a 1-D array of >= 2 values in (0, 1]")
        self.betas, self.num_timesteps = b, b.numel()
        self.learn_sigma, self.rescale_vb = bool(learn_sigma), bool(rescale_vb)
        tm = torch.arange(self.num_timesteps) if timestep_map is None else torch.as_tensor(timestep_map)
        if tm.shape != (self.num_timesteps,):
            raise ValueError(f"timestep_map has {tm.numel()} entries for {self.num_timesteps} betas")
        self.timestep_map = tm.long()
        a = 1.0 - b
        self.alphas_cumprod = ab = torch.cumprod(a, 0)
        self.alphas_cumprod_prev = ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        self.alphas_cumprod_next = torch.cat([ab[1:], ab.new_zeros(1)])
        self.sqrt_alphas_cumprod = ab.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - ab).sqrt()
        self.log_one_minus_alphas_cumprod = torch.log(1.0 - ab)
        self.sqrt_recip_alphas_cumprod = (1.0 / ab).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / ab - 1.0).sqrt()
        self.posterior_variance = pv = b * (1.0 - ab_prev) / (1.0 - ab)
        self.posterior_log_variance_clipped = torch.log(torch.cat([pv[1:2], pv[1:]]))
        self.posterior_mean_coef1 = b * ab_prev.sqrt() / (1.0 - ab)
        self.posterior_mean_coef2 = (1.0 - ab_prev) * a.sqrt() / (1.0 - ab)
        self.log_betas = b.log()
        fixed_large = torch.cat([pv[1:2], b[1:]])
        self.fixed_large_variance, self.fixed_large_log_variance = fixed_large, fixed_large.log()
        self._noise_mask = (torch.arange(self.num_timesteps) != 0).double()  # no noise at index 0

    # -- helpers ---------------------------------------------------------------------------------------------
    def _at(self, arr: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """arr[t] cast to x's dtype/device, shaped [B, 1, ...] against x."""
        v = arr[t.detach().long().cpu()].to(device=x.device, dtype=x.dtype)
        return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))

    def _index(self, t, x: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.is_floating_point():
            raise TypeError(f"DDPM indices must be integers, got dtype {t.dtype}")
        t = t.long().expand(x.shape[0])
        if int(t.min()) < 0 or int(t.max()) >= self.num_timesteps:
            raise ValueError(f"DDPM index out of range [0, {self.num_timesteps - 1}]: {t.tolist()[:8]}")
        return t

    def _call(self, model: Callable, x: Tensor, t: Tensor, y):
        return model(x, self.timestep_map.to(t.device)[t], y)

    def to_paper_time(self, index) -> Tensor:
        """The VP-equivalent paper time of index i: the t with VP's alpha(t) = sqrt(alpha_bar_i), i.e. the
        positive root of 1/4 (beta_max - beta_min) t^2 + 1/2 beta_min t = -1/2 log alpha_bar_i (beta_min 0.1,
        beta_max 20; docs/design.md, "Conventions"). For plotting; float64. Index i of a respaced diffusion gives
        the t of its original index. Index 999 of the T = 1000 linear schedule maps to ~1.0034: the discrete
        alpha_bar_999 is slightly below the continuous alpha(1)^2, and the value is not clamped."""
        from .interpolants import VP

        vp = VP()
        i = torch.as_tensor(index).long()
        c = -0.5 * self.alphas_cumprod[i].log()
        qa, qb = 0.25 * (vp.beta_max - vp.beta_min), 0.5 * vp.beta_min
        return (-qb + torch.sqrt(qb * qb + 4 * qa * c)) / (2 * qa)

    # -- forward process -------------------------------------------------------------------------------------
    def q_sample(self, x0: Tensor, t, noise: Tensor | None = None, generator=None) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (DDPM eq. 4)."""
        t = self._index(t, x0)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return (
            self._at(self.sqrt_alphas_cumprod, t, x0) * x0
            + self._at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def q_mean_variance(self, x0: Tensor, t):
        """(sqrt(alpha_bar_t) x0, 1 - alpha_bar_t, log(1 - alpha_bar_t)) of q(x_t | x0) (DDPM eq. 4; DiT's
        ``q_mean_variance``), each shaped like x0."""
        t = self._index(t, x0)
        return (
            self._at(self.sqrt_alphas_cumprod, t, x0) * x0,
            self._at(1.0 - self.alphas_cumprod, t, x0).expand_as(x0),
            self._at(self.log_one_minus_alphas_cumprod, t, x0).expand_as(x0),
        )

    def q_posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t):
        """(mu~_t(x_t, x0), beta~_t, log beta~_t clipped) of q(x_{t-1} | x_t, x0) (DDPM eqs. 6-7), each shaped
        like x_t (as DiT's; the variances are broadcast views)."""
        t = self._index(t, x_t)
        mean = (
            self._at(self.posterior_mean_coef1, t, x_t) * x0
            + self._at(self.posterior_mean_coef2, t, x_t) * x_t
        )
        return (
            mean,
            self._at(self.posterior_variance, t, x_t).expand_as(x_t),
            self._at(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t),
        )

    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x0 = x_t / sqrt(alpha_bar) - sqrt(1/alpha_bar - 1) eps."""
        return (
            self._at(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - self._at(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    def predict_eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        return (self._at(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / self._at(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    # -- reverse process -------------------------------------------------------------------------------------
    def _split(self, out: Tensor, x: Tensor):
        C = x.shape[1]
        want = 2 * C if self.learn_sigma else C
        if out.shape != (x.shape[0], want, *x.shape[2:]):
            raise ValueError(
                f"model output {tuple(out.shape)}; expected {want} channels for x {tuple(x.shape)}"
            )
        return torch.split(out, C, dim=1) if self.learn_sigma else (out, None)

    def _p_from_output(self, out: Tensor, x: Tensor, t: Tensor, clip_denoised: bool) -> dict:
        eps, v = self._split(out, x)
        if self.learn_sigma:
            frac = (v + 1) / 2  # IDDPM eq. 15
            log_var = frac * self._at(self.log_betas, t, x) + (1 - frac) * self._at(
                self.posterior_log_variance_clipped, t, x
            )
            var = torch.exp(log_var)
        else:
            var = self._at(self.fixed_large_variance, t, x).expand_as(x)
            log_var = self._at(self.fixed_large_log_variance, t, x).expand_as(x)
        x0 = self.predict_x0_from_eps(x, t, eps)
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(x0, x, t)
        return dict(mean=mean, variance=var, log_variance=log_var, pred_xstart=x0, eps=eps)

    def p_mean_variance(self, model: Callable, x: Tensor, t, y=None, clip_denoised: bool = False) -> dict:
        """p(x_{t-1} | x_t): dict(mean, variance, log_variance, pred_xstart, eps). Mean = mu~(x0_hat, x_t)."""
        t = self._index(t, x)
        return self._p_from_output(self._call(model, x, t, y), x, t, clip_denoised)

    def p_sample(self, model, x, t, y=None, noise=None, clip_denoised: bool = False, generator=None) -> dict:
        """x_{t-1} = mean + [t > 0] exp(log_var / 2) noise. Returns dict(sample, pred_xstart)."""
        t = self._index(t, x)
        out = self.p_mean_variance(model, x, t, y, clip_denoised)
        if noise is None:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        nonzero = self._at(self._noise_mask, t, x)
        return dict(
            sample=out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise,
            pred_xstart=out["pred_xstart"],
        )

    def ddim_sample(
        self, model, x, t, y=None, eta: float = 0.0, noise=None, clip_denoised: bool = False, generator=None
    ):
        """DDIM step (Song et al. 2021, eq. 12):
        x_{t-1} = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - s^2) eps_hat + [t > 0] s noise,
        s = eta sqrt((1 - ab_prev)/(1 - ab)) sqrt(1 - ab/ab_prev); eps_hat re-derived from x0_hat."""
        t = self._index(t, x)
        out = self.p_mean_variance(model, x, t, y, clip_denoised)
        eps = self.predict_eps_from_x0(x, t, out["pred_xstart"])
        ab, ab_prev = self._at(self.alphas_cumprod, t, x), self._at(self.alphas_cumprod_prev, t, x)
        s = eta * torch.sqrt((1 - ab_prev) / (1 - ab)) * torch.sqrt(1 - ab / ab_prev)
        if noise is None:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        mean = out["pred_xstart"] * torch.sqrt(ab_prev) + torch.sqrt(1 - ab_prev - s**2) * eps
        nonzero = self._at(self._noise_mask, t, x)
        return dict(sample=mean + nonzero * s * noise, pred_xstart=out["pred_xstart"])

    def ddim_reverse_sample(self, model, x, t, y=None, eta: float = 0.0, clip_denoised: bool = False):
        """DDIM run forwards (DiT's ``ddim_reverse_sample``, eq. 12 reversed, deterministic): from x at index t
        to index t + 1, x_{t+1} = sqrt(ab_next) x0_hat + sqrt(1 - ab_next) eps_hat, eps_hat re-derived from
        x0_hat, ab_next = ``alphas_cumprod_next[t]`` (0 after the last index). ``eta`` must be 0."""
        if eta != 0.0:
            raise ValueError(f"the reverse DDIM step is deterministic: eta must be 0, got {eta!r}")
        t = self._index(t, x)
        out = self.p_mean_variance(model, x, t, y, clip_denoised)
        eps = self.predict_eps_from_x0(x, t, out["pred_xstart"])
        ab_next = self._at(self.alphas_cumprod_next, t, x)
        sample = out["pred_xstart"] * torch.sqrt(ab_next) + torch.sqrt(1 - ab_next) * eps
        return dict(sample=sample, pred_xstart=out["pred_xstart"])

    def _loop(self, step, model, z, y, noise, generator, device, dtype, **kw) -> Tensor:
        if isinstance(noise, torch.Generator):
            generator, noise = noise, None
        if isinstance(z, Tensor):
            x = z
        else:
            x = torch.randn(
                tuple(z), generator=generator, device=device, dtype=dtype or torch.get_default_dtype()
            )
        steps = list(range(self.num_timesteps))[::-1]
        if noise is not None and len(noise) not in (len(steps), len(steps) - 1):
            raise ValueError(
                f"noise replay needs {len(steps)} per-step noises (or {len(steps) - 1}), got {len(noise)}"
            )
        for k, i in enumerate(steps):
            n = noise[k] if noise is not None and k < len(noise) else None
            if noise is not None and n is None:  # the last step adds no noise
                n = torch.zeros_like(x)
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            with torch.no_grad():
                x = step(model, x, t, y, noise=n, generator=generator, **kw)["sample"]
        return x

    def p_sample_loop(
        self, model, z, y=None, noise=None, clip_denoised=False, generator=None, device=None, dtype=None
    ):
        """Ancestral sampling from index T-1 down to 0. ``z``: the initial noise, or a shape to draw it.
        ``noise``: None (draw each step from ``generator``), a Generator, or a sequence of per-step noises in
        sampling order (T entries as DiT draws them, the last unused; or T - 1)."""
        return self._loop(
            self.p_sample, model, z, y, noise, generator, device, dtype, clip_denoised=clip_denoised
        )

    def ddim_sample_loop(
        self,
        model,
        z,
        y=None,
        noise=None,
        eta=0.0,
        clip_denoised=False,
        generator=None,
        device=None,
        dtype=None,
    ):
        """DDIM sampling over this diffusion's indices; same noise options as :meth:`p_sample_loop`."""
        return self._loop(
            self.ddim_sample,
            model,
            z,
            y,
            noise,
            generator,
            device,
            dtype,
            eta=eta,
            clip_denoised=clip_denoised,
        )

    # -- training --------------------------------------------------------------------------------------------
    def vb_terms_bpd(self, out: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool = False) -> Tensor:
        """L_vb per sample in bits/dim from a raw model output: KL for t > 0, decoder NLL at t = 0."""
        p = self._p_from_output(out, x_t, t, clip_denoised=clip_denoised)
        return ddpm_bound.vb_terms_bpd(self, p, x0, x_t, t)

    def prior_bpd(self, x0: Tensor) -> Tensor:
        """KL(q(x_{T-1} | x0) || N(0, I)) per sample in bits/dim (:func:`ddpm_bound.prior_bpd`)."""
        return ddpm_bound.prior_bpd(self, x0)

    _prior_bpd = prior_bpd  # DiT's name

    def calc_bpd_loop(self, model, x0, y=None, clip_denoised: bool = True, noise=None, generator=None) -> dict:
        """The full variational bound in bits/dim: dict(total_bpd, prior_bpd, vb, xstart_mse, mse)
        (:func:`ddpm_bound.calc_bpd_loop`; DiT's ``calc_bpd_loop``, its default ``clip_denoised=True``)."""
        return ddpm_bound.calc_bpd_loop(
            self, model, x0, y, clip_denoised=clip_denoised, noise=noise, generator=generator
        )

    def respaced(self, spec) -> "GaussianDiffusion":
        """This diffusion respaced by ``spec`` (:func:`space_timesteps`: an int, ``"250"``, ``"10,20"``,
        ``"ddim25"``): betas 1 - alpha_bar_{s_i} / alpha_bar_{s_{i-1}} over the kept indices s_i, and the
        network keeps seeing its original indices (``timestep_map`` composed)."""
        spec = str(spec) if isinstance(spec, int) and not isinstance(spec, bool) else spec
        kept = torch.tensor(space_timesteps(self.num_timesteps, spec))
        ab = self.alphas_cumprod[kept]
        betas = 1.0 - ab / torch.cat([ab.new_ones(1), ab[:-1]])
        return GaussianDiffusion(
            betas, learn_sigma=self.learn_sigma, timestep_map=self.timestep_map[kept], rescale_vb=self.rescale_vb
        )

    def training_losses(
        self, model: Callable, x0: Tensor, t, y=None, noise: Tensor | None = None, generator=None
    ):
        """Per-sample dict(loss, mse, vb): mse = mean_flat((eps - eps_hat)^2); with learn_sigma, vb = L_vb of
        [stop_grad(eps_hat), v] and loss = mse + vb (x T/1000 if rescale_vb); otherwise vb = 0, loss = mse."""
        t = self._index(t, x0)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.q_sample(x0, t, noise)
        out = self._call(model, x_t, t, y)
        eps, v = self._split(out, x_t)
        mse = mean_flat((noise - eps) ** 2)
        if not self.learn_sigma:
            return dict(loss=mse, mse=mse, vb=torch.zeros_like(mse))
        vb = self.vb_terms_bpd(torch.cat([eps.detach(), v], dim=1), x0, x_t, t)
        if self.rescale_vb:
            vb = vb * (self.num_timesteps / 1000.0)
        return dict(loss=mse + vb, mse=mse, vb=vb)


def build_ddpm(num_timesteps: int = 1000, respacing="", learn_sigma: bool = True) -> GaussianDiffusion:
    """DiT's ``create_diffusion``: linear betas over ``num_timesteps``, respaced by ``respacing`` (see
    :func:`space_timesteps`); respaced betas are 1 - alpha_bar_{s_i} / alpha_bar_{s_{i-1}} over kept s_i."""
    return GaussianDiffusion(linear_betas(num_timesteps), learn_sigma=learn_sigma).respaced(respacing)
