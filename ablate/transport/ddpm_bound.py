"""The variational bound of a discrete-time DDPM in bits per dimension, as DiT's ``GaussianDiffusion``
(``_vb_terms_bpd``, ``_prior_bpd``, ``calc_bpd_loop``; Ho et al. 2020 eq. 5, Nichol & Dhariwal 2021 Sec. 3):

.. math::
    L_{vb} = \\underbrace{D_{KL}(q(x_{T-1} | x_0) \\| N(0, I))}_{\\text{prior}}
        + \\sum_{t=1}^{T-1} \\underbrace{D_{KL}(q(x_{t-1} | x_t, x_0) \\| p(x_{t-1} | x_t))}_{L_t}
        \\underbrace{- \\log p(x_0 | x_1)}_{L_0}

each term a mean over dimensions divided by log 2 (bits per dimension); L_0 is the discretised-Gaussian
decoder NLL of 8-bit data in [-1, 1] (DDPM eq. 13) with ADM's tanh CDF, so ``total_bpd`` is the bound on the
bits per dimension of the 8-bit data. The elementwise densities live here too; :mod:`ablate.transport.ddpm`
re-exports them and its :class:`GaussianDiffusion` methods delegate to the functions below.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .loss import mean_flat

__all__ = [
    "normal_kl",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "vb_terms_bpd",
    "prior_bpd",
    "calc_bpd_loop",
]


def normal_kl(mean1, logvar1, mean2, logvar2) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    mean1, mean2 = torch.as_tensor(mean1), torch.as_tensor(mean2)
    logvar1, logvar2 = torch.as_tensor(logvar1), torch.as_tensor(logvar2)
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """ADM's tanh approximation of Phi(x): 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(bin of x) under N(means, e^{2 log_scales}) for data in [-1, 1] quantized to 256 levels
    (DDPM Sec. 3.3, eq. 13): bins of half-width 1/255, the outer bins extended to -inf / +inf (|x| > 0.999);
    probabilities clamped at 1e-12 before the log. Nats, elementwise."""
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (x - means + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (x - means - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def vb_terms_bpd(diffusion, p: dict, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
    """L_t per sample in bits/dim from p(x_{t-1} | x_t) (``p_mean_variance``'s dict): the KL to the true
    posterior for t > 0, the decoder NLL -log p(x_0 | x_1) at t = 0 (DiT's ``_vb_terms_bpd``)."""
    true_mean, _, true_log_var = diffusion.q_posterior_mean_variance(x0, x_t, t)
    kl = mean_flat(normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"])) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])
    nll = mean_flat(nll) / math.log(2.0)
    return torch.where(t == 0, nll, kl)


def prior_bpd(diffusion, x0: Tensor) -> Tensor:
    """KL(q(x_{T-1} | x_0) || N(0, I)) per sample in bits/dim (DiT's ``_prior_bpd``): the prior term, which
    depends only on the forward process."""
    t = torch.full((x0.shape[0],), diffusion.num_timesteps - 1, dtype=torch.long, device=x0.device)
    mean, _, log_var = diffusion.q_mean_variance(x0, t)
    return mean_flat(normal_kl(mean, log_var, 0.0, 0.0)) / math.log(2.0)


@torch.no_grad()
def calc_bpd_loop(
    diffusion, model: Callable, x0: Tensor, y=None, *, clip_denoised: bool = True, noise=None, generator=None
) -> dict:
    """The whole bound in bits/dim (DiT's ``calc_bpd_loop``), visiting the indices T-1, ..., 0 in DiT's
    order: at each, x_t = q_sample(x0, t, noise), L_t from the model, the MSE of x0_hat and of the eps
    re-derived from x0_hat. Returns per-sample tensors ``total_bpd`` [B] (= vb.sum(1) + prior_bpd),
    ``prior_bpd`` [B], and ``vb``, ``xstart_mse``, ``mse`` [B, T] whose column k is index T-1-k (DiT's order).

    ``clip_denoised`` clamps x0_hat to [-1, 1] (DiT's default here is True: data in [-1, 1]). ``noise``: None
    (draw from ``generator``), a Generator, or T per-step noises in visiting order (a sequence or [T, B, ...]).
    """
    if isinstance(noise, torch.Generator):
        generator, noise = noise, None
    T = diffusion.num_timesteps
    if noise is not None and len(noise) != T:
        raise ValueError(f"calc_bpd_loop needs {T} per-step noises (one per index, visiting order), got {len(noise)}")
    vb, xstart_mse, mse = [], [], []
    for k, i in enumerate(range(T - 1, -1, -1)):
        t = torch.full((x0.shape[0],), i, dtype=torch.long, device=x0.device)
        eps = noise[k] if noise is not None else torch.randn(
            x0.shape, generator=generator, dtype=x0.dtype, device=generator.device if generator else x0.device
        ).to(x0.device)
        x_t = diffusion.q_sample(x0, t, eps)
        p = diffusion.p_mean_variance(model, x_t, t, y, clip_denoised=clip_denoised)
        vb.append(vb_terms_bpd(diffusion, p, x0, x_t, t))
        xstart_mse.append(mean_flat((p["pred_xstart"] - x0) ** 2))
        mse.append(mean_flat((diffusion.predict_eps_from_x0(x_t, t, p["pred_xstart"]) - eps) ** 2))
    vb, xstart_mse, mse = (torch.stack(v, dim=1) for v in (vb, xstart_mse, mse))
    prior = prior_bpd(diffusion, x0)
    return dict(total_bpd=vb.sum(dim=1) + prior, prior_bpd=prior, vb=vb, xstart_mse=xstart_mse, mse=mse)
