r"""Forward operators ``A: x -> y`` (deepinv's ``Physics`` split, DDRM's SVD pieces).

* :class:`Operator`: any differentiable map ``(B, *x_shape) -> (B, *y_shape)``.
* :class:`LinearOperator`: adds ``adjoint`` (``<A x, y> = <x, A^T y>``) and, where cheap, the SVD
  pieces ``A = U diag(s) V^T`` through :meth:`LinearOperator.svd`, from which ``pinv`` follows.
* :class:`MatrixOperator`: a dense matrix acting on flattened ``x`` (the exact-posterior benchmark).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mgdm_audio.core.errors import UserInputError


class Operator(nn.Module):
    """A differentiable forward operator acting on a batch ``(B, *x_shape)``."""

    x_shape: tuple[int, ...] | None = None

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class SVDPieces:
    r"""``A = U \operatorname{diag}(s) V^T`` on flattened vectors, DDRM-style.

    ``Vt(x)`` maps ``(B, *x_shape)`` to ``(B, n)``; its first ``r = len(singulars)`` coordinates
    are the ones ``A`` sees. ``V`` is its inverse (orthogonal). ``Ut`` maps ``(B, *y_shape)`` to
    ``(B, m)`` and ``U`` back; the first ``r`` coordinates of ``Ut(y)`` pair with ``singulars``.
    """

    singulars: Tensor

    def V(self, c: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def Vt(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def U(self, c: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def Ut(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def rank(self) -> int:
        return int(self.singulars.numel())

    def pinv(self, y: Tensor) -> Tensor:
        """``A^+ y = V diag(1/s) U^T y`` (zero on the null space)."""
        uy = self.Ut(y)
        c = torch.zeros(uy.shape[0], self.n, dtype=uy.dtype, device=uy.device)
        c[:, : self.rank] = uy[:, : self.rank] / self.singulars.to(uy)
        return self.V(c)

    @property
    def n(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


class DenseSVD(SVDPieces):
    """SVD pieces of a dense ``(m, n)`` matrix; ``x`` is reshaped to ``x_shape``."""

    def __init__(self, matrix: Tensor, x_shape: tuple[int, ...], y_shape: tuple[int, ...], rtol: float = 1e-10):
        u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=True)
        keep = s > rtol * s.max()
        self._u = u.to(matrix.dtype)
        self._v = vh.T.to(matrix.dtype)
        self.singulars = s[keep].to(matrix.dtype)
        self.x_shape, self.y_shape = x_shape, y_shape

    @property
    def n(self) -> int:
        return self._v.shape[0]

    def Vt(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1) @ self._v.to(x)

    def V(self, c: Tensor) -> Tensor:
        return (c @ self._v.T.to(c)).reshape(c.shape[0], *self.x_shape)

    def Ut(self, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], -1) @ self._u.to(y)

    def U(self, c: Tensor) -> Tensor:
        return (c @ self._u.T.to(c)).reshape(c.shape[0], *self.y_shape)


class LinearOperator(Operator):
    """A linear operator with an adjoint; SVD pieces are optional (``svd()`` returns ``None``)."""

    def adjoint(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def svd(self) -> SVDPieces | None:
        return None

    def pinv(self, y: Tensor) -> Tensor:
        pieces = self.svd()
        if pieces is None:
            raise UserInputError(f"{type(self).__name__} has no SVD pieces, so its pseudo-inverse is not available.")
        return pieces.pinv(y)


def operator_norm_squared(
    op: LinearOperator,
    x_shape: tuple[int, ...],
    n_iter: int = 30,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> float:
    """``||A||^2`` (largest eigenvalue of ``A^T A``): ``s_max^2`` from the SVD pieces when they exist, else a
    power iteration on ``A^T A`` from a fixed seed (deterministic)."""
    pieces = op.svd()
    if pieces is not None:
        return float(pieces.singulars.max()) ** 2
    g = torch.Generator().manual_seed(0)
    v = torch.randn((1, *x_shape), generator=g, dtype=dtype).to(device)
    est = 1.0
    with torch.no_grad():
        for _ in range(n_iter):
            v = v / v.norm()
            w = op.adjoint(op(v))
            est = float((w * v).sum())
            v = w
    return max(est, 1e-12)


class MatrixOperator(LinearOperator):
    """``y = A x`` for a dense matrix ``A`` of shape ``(m, n)`` acting on flattened ``x``."""

    def __init__(self, matrix: Tensor, x_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if matrix.ndim != 2:
            raise UserInputError(f"MatrixOperator needs a 2-D matrix, got shape {tuple(matrix.shape)}.")
        self.register_buffer("matrix", matrix)
        self.x_shape = x_shape or (matrix.shape[1],)
        if math.prod(self.x_shape) != matrix.shape[1]:
            raise UserInputError(f"x_shape {self.x_shape} does not match the matrix's {matrix.shape[1]} columns.")
        self._svd: DenseSVD | None = None

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1) @ self.matrix.T.to(x)

    def adjoint(self, y: Tensor) -> Tensor:
        return (y.reshape(y.shape[0], -1) @ self.matrix.to(y)).reshape(y.shape[0], *self.x_shape)

    def svd(self) -> DenseSVD:
        if self._svd is None:
            self._svd = DenseSVD(self.matrix, self.x_shape, (self.matrix.shape[0],))
        return self._svd


def ones_complement_basis(n: int) -> Tensor:
    """A fixed orthogonal ``(n, n)`` matrix (columns orthonormal, float64) whose first column is ``ones / sqrt(n)``
    (a Householder reflection mapping ``e_1`` to the normalised ones vector): the SVD basis of averaging and
    summing operators (block-average super-resolution, the mixture of stems)."""
    u = torch.full((n,), 1.0 / math.sqrt(n), dtype=torch.float64)
    v = -u
    v[0] += 1.0
    if float(v.norm()) < 1e-14:  # n == 1
        return torch.eye(n, dtype=torch.float64)
    return torch.eye(n, dtype=torch.float64) - 2.0 * torch.outer(v, v) / (v @ v)
