r"""Gaussian-mixture prior with an exact denoiser and an exact linear-Gaussian posterior.

Prior (the MGDM reference's ``src/utils/gmm_utils.py``, Badr-MOUFAD/mgdm): ``p(x0) = sum_c w_c N(x0; m_c, v I)``.
Its noisy marginal in the VE convention is ``p_sigma(x) = sum_c w_c N(x; m_c, (v + sigma^2) I)``, so Tweedie's
denoiser is

.. math:: D(x, \sigma) = \sum_c r_c(x) \Big[ m_c + \frac{v}{v + \sigma^2}(x - m_c) \Big],
          \qquad r_c(x) \propto w_c\, \mathcal N(x; m_c, (v + \sigma^2) I),

with no network and no autodiff. For ``y = A x0 + sigma_y eps`` the posterior is the mixture

.. math:: \Sigma' = (I / v + A^T A / \sigma_y^2)^{-1}, \quad
          m'_c = \Sigma' (A^T y / \sigma_y^2 + m_c / v), \quad
          w'_c \propto w_c\, \mathcal N(y; A m_c, v A A^T + \sigma_y^2 I)

(no jitter is added to ``Sigma'``, unlike the reference code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mgdm_audio.core.denoiser import VEDenoiser
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.schedules import NoiseLevels

GMM_LEVELS_BETAS = (0.9999, 0.98)


def gmm_noise_levels() -> NoiseLevels:
    """The reference's table for the mixture: ``abar = [1, cumprod(linspace(.9999, .98, 1000))]``."""
    alphas = torch.linspace(GMM_LEVELS_BETAS[0], GMM_LEVELS_BETAS[1], 1000, dtype=torch.float64)
    return NoiseLevels.from_alphas_cumprod(torch.cumprod(alphas, 0), clip_min=1e-10)


@dataclass
class GaussianMixture:
    """``sum_c w_c N(m_c, var I)`` with ``means (C, d)`` and normalised ``log_weights (C,)`` (float64)."""

    means: Tensor
    log_weights: Tensor
    var: float = 1.0

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @classmethod
    def grid25(cls, dim: int, generator: torch.Generator) -> GaussianMixture:
        """25 components with means ``(8i, 8j, 8i, 8j, ...)``, ``i, j in {-2..2}``; weights ``U(0,1)`` normalised."""
        if dim < 2 or dim % 2:
            raise UserInputError(f"the 25-component mixture needs an even dimension >= 2, got {dim}.")
        ij = torch.tensor([(8.0 * i, 8.0 * j) for i in range(-2, 3) for j in range(-2, 3)], dtype=torch.float64)
        means = ij.repeat(1, dim // 2)
        w = torch.rand(25, generator=generator, dtype=torch.float64)
        return cls(means, (w / w.sum()).log())

    def _responsibilities(self, x64: Tensor, total_var: Tensor) -> Tensor:
        """Responsibilities ``r_c(x)`` for ``N(m_c, total_var I)``, shape ``(B, C)``, float64 (``x64 (B, d)``).

        ``||x||^2`` is the same for every component, so the logits are ``log w_c + (<x, m_c> - ||m_c||^2 / 2) /
        total_var``; the softmax over the 25 components is written out (half the time of ``torch.softmax`` on
        rows this short).
        """
        m = self.means.to(x64.device)
        logits = torch.addmm(0.5 * (m * m).sum(1), x64, m.T, beta=-1).div(total_var[:, None])
        logits = logits + self.log_weights.to(x64.device)
        # shifted logits below -700 (a weight under 1e-304 of the largest) are clamped: exp's slow path for very
        # negative arguments (and denormal results) made it 5x slower at low noise, for no change in the numbers
        e = (logits - logits.detach().amax(1, keepdim=True)).clamp(min=-700.0).exp()
        return e / e.sum(1, keepdim=True)

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Exact ``E[x0 | x0 + sigma n = x]`` for ``x (B, d)`` and ``sigma (B,)``."""
        total = self.var + sigma.double().to(x.device) ** 2
        x64 = x.reshape(x.shape[0], -1).double()
        r = self._responsibilities(x64, total)
        shrink = (self.var / total)[:, None]
        out = torch.addmm(shrink * x64, r * (1 - shrink), self.means.to(r.device))
        return out.to(x.dtype).reshape(x.shape)

    def log_prob(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """``log p_sigma(x)``, shape ``(B,)``, float64."""
        x64 = x.reshape(x.shape[0], -1).double()
        total = self.var + torch.as_tensor(sigma, dtype=torch.float64, device=x64.device) ** 2
        d2 = ((x64[:, None, :] - self.means.to(x64.device)) ** 2).sum(-1)
        comp = -0.5 * d2 / total - 0.5 * self.dim * torch.log(2 * math.pi * total)
        return (self.log_weights.to(x64.device) + comp).logsumexp(1)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        c = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[c] + math.sqrt(self.var) * z

    def denoiser(self) -> VEDenoiser:
        """This mixture's exact denoiser on the reference's mixture noise table."""
        levels = gmm_noise_levels()
        return VEDenoiser(self.denoise, levels)

    def posterior(self, matrix: Tensor, y: Tensor, sigma_y: float) -> MixturePosterior:
        """The exact posterior for ``y = A x0 + sigma_y eps`` (``matrix (m, d)``, ``y (m,)``)."""
        a = matrix.double()
        yv = y.reshape(-1).double()
        d = self.dim
        precision = torch.eye(d, dtype=torch.float64) / self.var + a.T @ a / sigma_y**2
        cov = torch.linalg.inv(precision)
        cov = 0.5 * (cov + cov.T)
        means = (a.T @ yv / sigma_y**2 + self.means / self.var) @ cov.T
        marg_cov = self.var * a @ a.T + sigma_y**2 * torch.eye(a.shape[0], dtype=torch.float64)
        resid = yv - self.means @ a.T
        sol = torch.linalg.solve(marg_cov, resid.T).T
        logits = self.log_weights - 0.5 * (resid * sol).sum(1)
        return MixturePosterior(means, logits - logits.logsumexp(0), cov)


@dataclass
class MixturePosterior:
    """A Gaussian mixture with one shared full covariance (the exact posterior above)."""

    means: Tensor
    log_weights: Tensor
    cov: Tensor

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        c = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.cov)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[c] + z @ chol.T


def random_measurement(dim: int, dim_y: int, generator: torch.Generator) -> tuple[Tensor, float]:
    """The MCGdiff protocol: ``A = U diag(s) V[:d_y]`` with random orthogonal ``U, V`` and sorted
    ``s ~ U(0, 1)``; ``sigma_y = U(0, 1) * max(s)``. Returns ``(A (d_y, d), sigma_y)``."""
    u, _ = torch.linalg.qr(torch.randn(dim_y, dim_y, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    s = torch.rand(dim_y, generator=generator, dtype=torch.float64).sort(descending=True).values
    a = u @ torch.diag(s) @ v[:dim_y]
    sigma_y = float(torch.rand((), generator=generator, dtype=torch.float64) * s.max())
    return a, sigma_y
