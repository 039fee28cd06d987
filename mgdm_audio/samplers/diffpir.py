r"""DiffPIR (Zhu et al. 2023, "Denoising diffusion models for plug-and-play image restoration"), as in the
MGDM reference's ``diffpir()`` (``src/posterior_samplers/diffpir.py`` of Badr-MOUFAD/mgdm).

VP coordinates on the grid ``ts = floor(linspace(0, T - 1, N))``. For ``i = N-1 .. 2``, ``k = ts[i]``,
``k' = ts[i-1]``:

.. math::
    \hat x_0 = D_k(x_k), \qquad \rho_k = \lambda \sigma_y^2 \bar\alpha_k / (1 - \bar\alpha_k),

    \hat x_0 \leftarrow \arg\min_x \lVert y - A x \rVert^2 + \rho_k \lVert x - \hat x_0 \rVert^2
        \quad\text{i.e.}\quad (\rho_k I + A^T A)\, x = \rho_k \hat x_0 + A^T y,

    \hat\epsilon = (x_k - \sqrt{\bar\alpha_k}\, \hat x_0) / \sqrt{1 - \bar\alpha_k}, \qquad
    x_{k'} = \sqrt{\bar\alpha_{k'}}\, \hat x_0 + \sqrt{1 - \bar\alpha_{k'}}\,
        (\sqrt{1 - \zeta}\, \hat\epsilon + \sqrt{\zeta}\, z), \quad z \sim \mathcal N(0, I).

Data step (:func:`proximal_data_step`): with the operator's SVD pieces ``A = U diag(s) V^T`` it is exact in
the V basis, ``c = V^T \hat x_0``: range coordinates ``c_i <- (rho c_i + s_i (U^T y)_i) / (rho + s_i^2)``, null
coordinates unchanged. Without SVD pieces it is the reference's one gradient step
``x0 - grad ||y - A(x0)||^2 / (2 rho) = x0 + A'(x0)^T (y - A(x0)) / rho`` (the adjoint for linear operators,
one VJP through ``A`` otherwise, so non-linear operators are accepted: ``needs_linear = False``). The reference
notes that this fallback diverges; it is kept as the reference has it. The last update is not a DDIM(eta) step
of the core bridge (its std ``sqrt(zeta (1 - abar_k'))`` exceeds the DDPM posterior std for fine grids), so it
is written out here.

Cost: ``N - 2`` NFE (``N - 1`` with ``final_denoise``), no VJP (the gradient fallback differentiates ``A``
only, never the denoiser).

Quirk flags (reference behaviour available, fixed behaviour the default where noted):

* ``use_x_init`` (default ``True``, fixed): start from ``x_init``. ``False`` reproduces the reference, which
  ignores the given noise and draws a fresh standard normal (here from ``generator``).
* ``final_denoise`` (default ``False``, reference): the reference returns the *noisy* ``x`` at ``ts[1]``;
  ``True`` returns ``D_{ts[1]}(x)`` instead (one more NFE).

``n_reps`` of the reference (repeating a step, 1 in every config) is not offered. The start state is
``vp_start(prior, noise, abar[ts[-1]])`` like DDIM (``unit`` for images, ``vp`` for audio).
:data:`DIFFPIR_TASK_PARAMS` holds the reference's per-task ``(lambda, zeta)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mgdm_audio.core.denoiser import CountingDenoiser, vp_denoise
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import LinearOperator
from mgdm_audio.core.rng import randn_like
from mgdm_audio.samplers.base import Callback, SamplerSpec, notify, sampler, vp_schedule, vp_start

#: The reference's per-task ``(lambda, zeta)`` (``configs/experiments/sampler/diffpir.yaml``); every other
#: task (and audio) uses the base values ``(1.0, 1.0)``.
DIFFPIR_TASK_PARAMS: dict[str, tuple[float, float]] = {
    "inpainting_middle": (1.0, 1.0),
    "inpainting_center": (1.0, 1.0),
    "outpainting_half": (1.0, 1.0),
    "outpainting_bottom": (1.0, 1.0),
    "outpainting_top": (1.0, 1.0),
    "sr4": (1.0, 0.1),
    "sr16": (1.0, 0.1),
    "blur": (1.0, 0.1),
    "blur_svd": (1.0, 0.1),
    "motion_blur": (1.0, 0.1),
}


@dataclass
class DiffPIRConfig:
    """DiffPIR settings; defaults are the reference's image values (``nsteps 1000, lmbd 1, zeta 1``)."""

    n_steps: int = 1000
    lam: float = 1.0
    zeta: float = 1.0
    #: True (fixed): start from ``x_init``; False (reference): draw fresh noise from ``generator``.
    use_x_init: bool = True
    #: False (reference): return the noisy state at ``ts[1]``; True: return ``D_{ts[1]}`` (+1 NFE).
    final_denoise: bool = False


def proximal_data_step(x0: Tensor, problem: InverseProblem, rho: float, y: Tensor | None = None) -> Tensor:
    r"""DiffPIR's data step: ``argmin_x ||y - A x||^2 + rho ||x - x0||^2``.

    Exact in the SVD basis when the operator has SVD pieces; otherwise one gradient step from ``x0``. ``y``
    (default: the problem's observation; batch 1 or the chains') is used in the exact case only (PnP-DM draws its
    likelihood step with a perturbed one).
    """
    op = problem.operator
    pieces = op.svd() if isinstance(op, LinearOperator) else None
    if pieces is not None:
        c = pieces.Vt(x0)
        r = pieces.rank
        s = pieces.singulars.to(c)
        uy = pieces.Ut((problem.y if y is None else y).to(x0))[:, :r]
        c = torch.cat([(rho * c[:, :r] + s * uy) / (rho + s * s), c[:, r:]], dim=1)
        return pieces.V(c).reshape(x0.shape)
    return x0 + problem.adjoint_residual(x0) / rho


@sampler(DiffPIRConfig)
def diffpir(
    prior: CountingDenoiser,
    problem: InverseProblem | None,
    x_init: Tensor,
    generator: torch.Generator | None,
    config: DiffPIRConfig,
    callback: Callback | None,
    info: dict[str, Any],
) -> Tensor:
    assert problem is not None  # the @sampler decorator rejects a missing problem
    abar = prior.levels.abar
    ts, cut = vp_schedule(prior, config.n_steps)
    top = config.n_steps - 1 - cut  # the first index of ts visited
    noise = x_init if config.use_x_init else randn_like(x_init, generator)
    x = vp_start(prior, noise, abar[ts[top]])
    zeta = float(config.zeta)
    total = top - 1
    with torch.no_grad():
        for i in range(top, 1, -1):
            k, k_next = ts[i], ts[i - 1]
            a, a_next = float(abar[k]), float(abar[k_next])
            x0 = vp_denoise(prior, x, abar[k])
            rho = config.lam * problem.sigma_y**2 * a / (1.0 - a)
            x0 = proximal_data_step(x0, problem, rho)
            eps = (x - a**0.5 * x0) / (1.0 - a) ** 0.5
            noise = (1.0 - zeta) ** 0.5 * eps + zeta**0.5 * randn_like(x, generator)
            x = a_next**0.5 * x0 + (1.0 - a_next) ** 0.5 * noise
            notify(callback, i=top - i, total=total, x=x, x0=x0)
        if config.final_denoise:
            return vp_denoise(prior, x, abar[ts[1]])
        return x


#: A cheap image setting; the image presets are it plus their validation-chosen values.
_FAST: dict[str, Any] = {"n_steps": 100}

SPEC = SamplerSpec(
    warm_start=True,
    name="diffpir",
    run=diffpir,
    config_cls=DiffPIRConfig,
    presets={
        "paper-image": {},
        # the point chosen on the exact-posterior benchmark's validation problems with four points per competitor
        # (evaluation/gmm/rounds/16-competitors; {} = its reference settings kept).
        "gmm": {},
        "paper-audio": {"lam": 1.0, "zeta": 1.0},
        "fast": _FAST,
        # `fast` at the point chosen on Fashion-MNIST validation images with the same 3-point budget as every image
        # sampler (evaluation/image/choice.md); `--preset default` of the image benchmark runs it.
        "image": {**_FAST},
        # lambda 1, zeta 1 of configs/exp_sound/sampler/diffpir.yaml (MGDM reference), its 1000 steps cut to 100:
        # 98 NFE per segment, no VJP, about MGDM `audio-fast`'s 68 NFE + 31 VJP per segment.
        "audio-fast": {"n_steps": 100, "lam": 1.0, "zeta": 1.0},
        # `audio-fast` at the point chosen on a held-out-timbre validation split with the same 6-point budget as every
        # audio sampler (evaluation/separation/tuning.yaml; evaluation/results/separation_tuning.md).
        "audio-tuned": {"n_steps": 100, "lam": 1.0, "zeta": 0.8},
    },
    needs_linear=False,
    summary="DiffPIR: denoise, proximal data step (exact with SVD pieces), re-noise with zeta-mixed noise",
)
