r"""The inverse problem: operator, observation and Gaussian likelihood.

.. math:: y = A(x_0) + \sigma_y \varepsilon, \qquad
          \log g(y \mid x) = -\frac{\lVert y - A(x) \rVert^2}{2 \sigma_y^2} + \text{const}.

The log-potential is returned per chain (shape ``(B,)``) so that summing it over the batch keeps the
chains independent under autograd.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mgdm_audio.core.autodiff import vjp
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.operators import LinearOperator, Operator


class InverseProblem:
    """``y = A(x) + sigma_y * noise``; ``y`` has a leading batch dimension of 1 or of the chains' B."""

    def __init__(self, operator: Operator, y: Tensor, sigma_y: float) -> None:
        if not isinstance(y, Tensor) or y.ndim < 1:
            raise UserInputError("the observation y must be a tensor with a leading batch dimension.")
        if not torch.all(torch.isfinite(y)):
            raise UserInputError("the observation y contains NaN or infinite values; clean the input first.")
        if not (math.isfinite(sigma_y) and sigma_y > 0):
            raise UserInputError(f"sigma_y must be a positive finite number, got {sigma_y}.")
        self.operator = operator
        self.y = y
        self.sigma_y = float(sigma_y)

    @property
    def is_linear(self) -> bool:
        return isinstance(self.operator, LinearOperator)

    def check_shape(self, x: Tensor) -> None:
        """Raise a clear error when ``A(x)`` cannot be compared with ``y``."""
        x_shape = getattr(self.operator, "x_shape", None)
        if x_shape is not None and tuple(x.shape[1:]) != tuple(x_shape):
            raise UserInputError(
                f"the samples have shape {tuple(x.shape[1:])} per chain but the operator expects {tuple(x_shape)}."
            )
        with torch.no_grad():
            ax = self.operator(x[:1])
        if tuple(ax.shape[1:]) != tuple(self.y.shape[1:]) or self.y.shape[0] not in (1, x.shape[0]):
            raise UserInputError(
                f"the observation y has shape {tuple(self.y.shape)} but A(x) has shape "
                f"({x.shape[0]}, {', '.join(map(str, ax.shape[1:]))}); y's batch must be 1 or {x.shape[0]}."
            )

    def residual(self, x: Tensor) -> Tensor:
        """``y - A(x)`` (broadcast over the batch)."""
        return self.y.to(x) - self.operator(x)

    def log_likelihood(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """``-||y - A(x)||^2 / (2 sigma_y^2)`` per chain, shape ``(B,)``; the sum in ``dtype`` if given (float64 keeps
        differences of order 1 between chains when a small ``sigma_y`` makes the values large)."""
        r = self.residual(x)
        if dtype is not None:
            r = r.to(dtype)
        return -r.reshape(r.shape[0], -1).pow(2).sum(1) / (2 * self.sigma_y**2)

    def adjoint_residual(self, x: Tensor) -> Tensor:
        """``A^T (y - A x)`` (``= sigma_y^2 grad log g(y | x)``, free of ``1/sigma_y^2`` factors): the adjoint
        for linear operators, one VJP through ``A`` otherwise. The denoiser is never involved."""
        if isinstance(self.operator, LinearOperator):
            return self.operator.adjoint(self.residual(x))
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(-0.5 * self.residual(xg).pow(2).sum(), xg)
        return g

    def grad_log_likelihood(self, x: Tensor) -> Tensor:
        """``nabla_x log g(y | x) = A^T (y - A x) / sigma_y^2``."""
        return self.adjoint_residual(x) / self.sigma_y**2

    def pullback_grad_log_likelihood(self, x0: Tensor, x: Tensor, scale: float = 1.0) -> Tensor:
        r"""``scale J^T nabla log g(y | x0)`` for ``x0 = f(x)`` computed with a graph back to ``x`` (a denoiser call).

        .. math:: \mathrm{scale}\, J_f(x)^\top A^\top (y - A x_0) / \sigma_y^2
                  = \nabla_x \big[\mathrm{scale}\, \langle A f(x),\, r \rangle / \sigma_y^2\big],
                  \quad r = y - A x_0 \text{ held fixed}

        (``J_A^T`` in place of ``A^T`` for a nonlinear ``A``). One backward pass through ``A`` and ``f``:
        ``A^T r`` is never formed as a tensor, and the product is taken in the observation space (for the sum of
        stems a quarter of the signal's size), so it costs less than :meth:`grad_log_likelihood` followed by a
        VJP of ``f``, with the same numbers up to rounding.
        """
        ax = self.operator(x0)
        return vjp(ax, x, self.y.to(ax) - ax.detach(), scale=scale / self.sigma_y**2)
