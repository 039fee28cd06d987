r"""DDRM (Kawar et al. 2022, "Denoising diffusion restoration models"): the "efficient generalized steps" in
the operator's SVD basis (as vendored in ``src/ddrm/functions/denoising.py`` of Badr-MOUFAD/mgdm; DDNM+, its
relative, is ``ddnm/algo.py`` there).

Coordinates. DDRM works in VE coordinates ``x_t = x_0 + sigma_t n`` (``x_ve = x_vp / sqrt(abar)``), and so
does this module: the prior is called directly as ``D(x, sigma_k)`` with ``sigma_k = prior.levels.sigmas[k]``
on the grid ``ts = floor(linspace(0, T - 1, N))``. With ``A = U diag(s) V^T`` write ``\bar x = V^T x``,
``\bar x_\theta = V^T D(x_t, \sigma_t)``, ``\bar y = \Sigma^{-1} U^T y`` (range coordinates ``i < r``), so that
``\bar y_i = \bar x_{0,i} + (\sigma_y / s_i) \varepsilon_i``.

Start (Eq. 7 of the paper at ``t = T``), ``z = x_init`` read as V-basis coordinates:
``\bar x_T^{(i)} = \bar y^{(i)} + \sqrt{\sigma_T^2 - \sigma_y^2 / s_i^2}\, z_i`` where ``s_i \sigma_T > \sigma_y``,
else ``\sigma_T z_i`` (null coordinates, and range coordinates noisier than ``\sigma_T``, as the DDRM code).

Step ``t = ts[i] -> t' = ts[i-1]`` for ``i = N-1 .. 2`` (Eq. 8), fresh ``z ~ N(0, I)`` per coordinate:

* null space (``i >= r``), the eta-DDIM update with ``\hat\epsilon = (\bar x_t - \bar x_\theta)/\sigma_t``:
  ``\bar x_{t'} = \bar x_\theta + \sqrt{1 - \eta_c^2}\, \sigma_{t'} \hat\epsilon + \eta_c \sigma_{t'} z``;
* less noisy than ``y`` (``s_i \sigma_{t'} < \sigma_y``):
  ``\bar x_{t'} = \bar x_\theta + \sqrt{1 - \eta^2}\, \sigma_{t'} (\bar y - \bar x_\theta) s_i / \sigma_y
  + \eta \sigma_{t'} z``;
* noisier than ``y`` (``s_i \sigma_{t'} \ge \sigma_y``):
  ``\bar x_{t'} = (1 - \eta_b) \bar x_\theta + \eta_b \bar y + \sqrt{\sigma_{t'}^2 - \eta_b^2 \sigma_y^2 / s_i^2}\, z``.

The last step goes to the clean level ``ts[0] = 0`` (``sigma = 0``): every case then gives
``\bar x_\theta``, so the sample is ``D(x_{ts[1]}, \sigma_{ts[1]})``, returned as is.

Warm start (:class:`~mgdm_audio.samplers.base.WarmStart`: an estimate ``\hat x`` and a level ``S``; SDEdit). The
grid's levels above ``S`` are skipped (:func:`~mgdm_audio.samplers.base.warm_cut`, ``c`` of them) and the chain starts
at ``t_c = ts[N-1-c]`` with a draw of DDRM's variational distribution ``q(\bar x_{t_c} | x_0 = \hat x, y)``
(Eq. 8 at ``t = t_c``), i.e. the step rule above into ``\sigma_c`` with ``\bar x_\theta = \bar{\hat x}``
(``= V^T \hat x``) and, in the null space, the noise estimate ``\hat\epsilon`` replaced by its law under the
forward process, a standard normal ``z_0`` (``z_0 = x_init`` in the V basis, ``z`` fresh):

* null space: ``\bar x_c = \bar{\hat x} + \sqrt{1 - \eta_c^2}\, \sigma_c z_0 + \eta_c \sigma_c z``
  (in law ``\bar{\hat x} + \sigma_c z``);
* measurement noisier than the level (``s_i \sigma_c < \sigma_y``):
  ``\bar x_c = \bar{\hat x} + \sqrt{1 - \eta^2}\, \sigma_c (\bar y - \bar{\hat x}) s_i / \sigma_y
  + \eta \sigma_c z``;
* measurement less noisy than the level (``s_i \sigma_c \ge \sigma_y``):
  ``\bar x_c = (1 - \eta_b) \bar{\hat x} + \eta_b \bar y + \sqrt{\sigma_c^2 - \eta_b^2 \sigma_y^2 / s_i^2}\, z``
  (with ``eta_b = 1``: the cold start's rule at ``\sigma_c``).

This start is derived here (the paper starts at ``t = T`` only): it is SDEdit's forward noising in DDRM's own
forward process. Averaged over an observation of ``x_0 = \hat x``, ``\bar y_i \sim N(\bar{\hat x}_i,
\sigma_y^2 / s_i^2)``, every case has the law ``N(\bar{\hat x}_i, \sigma_c^2)`` (DDRM's marginal
``q(x_t | x_0) = N(x_0, \sigma_t^2 I)``), the VE-noised estimate of the other samplers. Then the steps
``i = N-1-c .. 2`` and the last denoise: ``N - 1 - c`` NFE.

The eta-DDIM update has std ``eta * sigma_{t'}`` (in VP: ``eta sqrt(1 - abar_{t'})``), a parametrisation
that exceeds the DDPM posterior std (the core bridge's ``eta = 1``) for fine grids, so it cannot be routed
through :func:`mgdm_audio.core.bridge.ddim_step`; it is written out here.

Eta mapping (DDRM code ``efficient_generalized_steps(etaA, etaB, etaC)``): ``eta`` = ``etaA`` (range
coordinates less noisy than ``y``), ``eta_b`` = ``etaB`` (noisier than ``y``), ``eta_c`` = ``etaC`` (null
space). DDRM's own command line passes ``etaA = etaC = eta``; that is the default here (``eta_c = None``).
The MCGdiff GMM script of the reference calls ``etaB = 1, etaA = 0.85, etaC = 1``: preset ``"mcgdiff"``.

Deviations from the DDRM code: the start is the exact VE draw above (the code's state is that draw times
``1 / sqrt(1 - abar_T)``, negligible for ``abar_T`` near 0); a range coordinate
with ``s_i sigma_{t'} = sigma_y`` exactly is treated as "noisier than y" (the code falls through to the
null-space rule); the code draws the "noisier than y" noise with ``y``'s batch shape, so with one ``y`` for
many chains (the reference's MCGdiff GMM call) all chains share that draw, whereas here each chain has its
own. ``sigma_y`` must be positive (always true for an :class:`InverseProblem`).

Cost: ``N - 1`` NFE cold, no VJP. Needs the operator's SVD pieces (``needs_svd``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mgdm_audio.core.denoiser import CountingDenoiser
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import SVDPieces
from mgdm_audio.core.rng import randn_like
from mgdm_audio.samplers.base import (
    Callback,
    SamplerSpec,
    WarmStart,
    notify,
    require_svd,
    sampler,
    vp_schedule,
)


@dataclass
class DDRMConfig:
    """DDRM settings; defaults are the DDRM paper's (20 steps, ``eta 0.85``, ``eta_b 1``)."""

    n_steps: int = 20
    #: DDRM's eta (``etaA``): range coordinates less noisy than the observation.
    eta: float = 0.85
    #: DDRM's eta_b (``etaB``): range coordinates noisier than the observation.
    eta_b: float = 1.0
    #: Null-space eta (``etaC``); ``None`` uses ``eta`` as DDRM's own code does; the reference's MCGdiff call uses 1.
    eta_c: float | None = None


def _svd_pieces(problem: InverseProblem) -> SVDPieces:
    return require_svd(problem, "DDRM")


@dataclass(frozen=True)
class _Spectral:
    """The observation in the V basis: singular values ``s`` (float64 and the run's dtype), ``U^T y`` and
    ``\bar y = U^T y / s`` on the ``r`` range coordinates, ``sigma_y`` and the etas ``(eta, eta_b, eta_c)``."""

    s64: Tensor
    s: Tensor
    uy: Tensor
    ybar: Tensor
    sigma_y: float
    r: int
    etas: tuple[float, float, float]

    def update(self, c0: Tensor, eps: Tensor, z: Tensor, sigma_next: float) -> Tensor:
        """DDRM's step rule (Eq. 8) into ``sigma_next``: the V-basis state from ``c0 = V^T x_theta``, the null-space
        noise estimate ``eps`` and fresh noise ``z`` (module docstring)."""
        eta_a, eta_b, eta_c = self.etas
        r, s64, sigma_y = self.r, self.s64, self.sigma_y
        # null space: eta-DDIM with the noise estimate
        c = c0 + (1 - eta_c**2) ** 0.5 * sigma_next * eps + eta_c * sigma_next * z
        # range coordinates: compare sigma_{t'} with sigma_y / s_i
        c0r, zr = c0[:, :r], z[:, :r]
        after = c0r + (1 - eta_a**2) ** 0.5 * sigma_next * (self.uy - self.s * c0r) / sigma_y + eta_a * sigma_next * zr
        before_std = (sigma_next**2 - eta_b**2 * (sigma_y / s64) ** 2).clamp(min=0).sqrt().to(c0)
        before = (1 - eta_b) * c0r + eta_b * self.ybar + before_std * zr
        noisier = (s64 * sigma_next >= sigma_y).to(c0.device)
        c[:, :r] = torch.where(noisier, before, after)
        return c


@sampler(DDRMConfig)
def ddrm(
    prior: CountingDenoiser,
    problem: InverseProblem | None,
    x_init: Tensor,
    generator: torch.Generator | None,
    config: DDRMConfig,
    callback: Callback | None,
    info: dict[str, Any],
) -> Tensor:
    assert problem is not None  # the @sampler decorator rejects a missing problem
    eta_a, eta_b = float(config.eta), float(config.eta_b)
    eta_c = eta_a if config.eta_c is None else float(config.eta_c)
    for name, value in (("eta", eta_a), ("eta_b", eta_b), ("eta_c", eta_c)):
        if not 0.0 <= value <= 1.0:
            raise UserInputError(f"DDRM's {name} must lie in [0, 1], got {value}.")
    pieces = _svd_pieces(problem)
    sig = prior.levels.sigmas
    ts, cut = vp_schedule(prior, config.n_steps)  # cut > 0: a warm start skips the levels above its own
    top = config.n_steps - 1 - cut  # the first index of ts visited
    sigma_y = problem.sigma_y
    r = pieces.rank
    shape = x_init.shape
    warm: WarmStart | None = prior.warm
    with torch.no_grad():
        s64 = pieces.singulars.double()
        s = s64.to(x_init)
        uy = pieces.Ut(problem.y.to(x_init))[:, :r]
        spectral = _Spectral(s64, s, uy, uy / s, sigma_y, r, (eta_a, eta_b, eta_c))

        sigma_T = float(sig[ts[top]])
        z = x_init.reshape(shape[0], -1)
        if warm is None:
            # start: exact DDRM marginal at sigma_T, in VE coordinates of the V basis
            c = sigma_T * z
            seen = (s64 * sigma_T > sigma_y).to(x_init.device)
            start_std = (sigma_T**2 - (sigma_y / s64) ** 2).clamp(min=0).sqrt().to(x_init)
            c[:, :r] = torch.where(seen, spectral.ybar + start_std * z[:, :r], c[:, :r])
        else:
            # warm: a draw of q(x_{t_c} | x_0 = x_hat, y), the step rule with x_theta = x_hat (module docstring)
            c_hat = pieces.Vt(warm.like(x_init))
            c = spectral.update(c_hat, z, randn_like(c_hat, generator), sigma_T)
        x = pieces.V(c).reshape(shape)

        for i in range(top, 1, -1):
            k, k_next = ts[i], ts[i - 1]
            sigma_t, sigma_next = float(sig[k]), float(sig[k_next])
            x0 = prior(x, sigma_t)
            c0, ct = pieces.Vt(x0), pieces.Vt(x)
            c = spectral.update(c0, (ct - c0) / sigma_t, randn_like(c0, generator), sigma_next)
            x = pieces.V(c).reshape(shape)
            notify(callback, i=top - i, total=top, x=x, x0=x0)
        x0 = prior(x, float(sig[ts[1]]))
        notify(callback, i=top - 1, total=top, x=x0, x0=x0)
        return x0


#: A cheap image setting; the image presets are it plus their validation-chosen values.
_FAST: dict[str, Any] = {"n_steps": 10}

SPEC = SamplerSpec(
    name="ddrm",
    run=ddrm,
    config_cls=DDRMConfig,
    presets={
        "paper-image": {},
        # the point chosen on the exact-posterior benchmark's validation problems with four points per competitor
        # (evaluation/gmm/rounds/16-competitors; {} = its reference settings kept).
        "gmm": {"eta": 1.0},
        "paper-audio": {"n_steps": 1000},
        "mcgdiff": {"eta": 0.85, "eta_b": 1.0, "eta_c": 1.0},
        "fast": _FAST,
        # `fast` at the point chosen on Fashion-MNIST validation images with the same 3-point budget as every image
        # sampler (evaluation/image/choice.md); `--preset default` of the image benchmark runs it.
        "image": {**_FAST, "eta": 1.0},
        # The reference's audio run has DDNM, not DDRM (configs/exp_sound/sampler/ddnm.yaml: eta 0.85, 1000 steps);
        # DDRM at the DDRM paper's etas (the defaults: eta 0.85, eta_b 1) on 100 steps: 99 NFE per segment, no VJP,
        # about MGDM `audio-fast`'s 68 NFE + 31 VJP per segment.
        "audio-fast": {"n_steps": 100},
        # `audio-fast` at the point chosen on a held-out-timbre validation split with the same 6-point budget as every
        # audio sampler (evaluation/separation/tuning.yaml; evaluation/results/separation_tuning.md): the preset itself.
        "audio-tuned": {"n_steps": 100},
    },
    needs_linear=True,
    needs_svd=True,
    warm_start=True,
    summary="DDRM: per-singular-coordinate variational steps in the operator's SVD basis (needs SVD pieces)",
)
