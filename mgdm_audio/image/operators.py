r"""Image inverse-problem operators: the MGDM reference code's image tasks (``src/utils/im_invp_utils.py`` of
Badr-MOUFAD/mgdm), scaled to any image size ``(C, H, W)``.

Images are batches ``(B, C, H, W)`` in ``[-1, 1]``. The reference geometry is defined at 256x256 and
scaled by ``H / 256`` (and ``W / 256``). The observation noise ``sigma_y`` belongs to
:class:`~mgdm_audio.core.likelihood.InverseProblem`, not to the operators.

============================  ==========================================================  =========
task name                     operator                                                    kind
============================  ==========================================================  =========
``outpainting_half``          :class:`OutpaintRightHalf`: ``y = x[..., :, :W//2]``         selection
``inpainting_center``         :class:`InpaintCenterBox`: ``y = x`` outside a centred box   selection
``sr4``, ``sr16``             :class:`SuperResolution`: ``y = mean of each f x f block``   linear+SVD
``blur``                      :class:`GaussianBlur`: ``y = k * reflect_pad(x)``            linear
``motion_blur``               :class:`MotionBlur`: ``y = k_motion * reflect_pad(x)``       linear
``high_dynamic_range``        :class:`HighDynamicRange`: ``y = clip(2 x, -1, 1)``          non-linear
``phase_retrieval``           :class:`PhaseRetrieval`: ``y = |F pad((x + 1) / 2)|``        non-linear
``jpeg2``                     :class:`JPEG`: differentiable JPEG, quality 2                non-linear
``nonlinear_blur``            :class:`NonlinearBlur`: blur in linear light (stand-in), or  non-linear
                              the reference's bkse network from a user's weights
                              (:class:`~mgdm_audio.image.kernel_wizard.KernelWizardBlur`)
============================  ==========================================================  =========

Selection operators return the observed pixels as a flat vector ``(B, m)`` in channel-first
(``C, H, W``) flattening order; their SVD pieces are a permutation (``V``), unit singulars and
``U = I``. Super-resolution returns ``(B, C, H/f, W/f)``; its SVD pieces use, per ``f x f`` block, a
fixed orthonormal (Householder) basis whose first vector is the normalised ones vector, so the block
mean has singular value ``1/f`` and nothing dense of size ``H W`` is ever formed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import Tensor

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.operators import LinearOperator, Operator, SVDPieces, ones_complement_basis
from mgdm_audio.image.tasks import TASKS

__all__ = [
    "TASKS",
    "GaussianBlur",
    "HighDynamicRange",
    "JPEG",
    "InpaintCenterBox",
    "MotionBlur",
    "NonlinearBlur",
    "OutpaintRightHalf",
    "PhaseRetrieval",
    "SuperResolution",
    "dct_matrix",
    "diff_round",
    "jpeg_quality_factor",
    "make_operator",
    "motion_kernel",
    "scaled_kernel_size",
]

ImageShape = tuple[int, int, int]


def _check_image_shape(image_shape: tuple[int, ...]) -> ImageShape:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise UserInputError(f"image_shape must be (C, H, W) with positive sizes, got {tuple(image_shape)}.")
    return shape  # type: ignore[return-value]


def _check_batch(x: Tensor, shape: ImageShape, name: str) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise UserInputError(f"{name} expects images of shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}.")


def scaled_kernel_size(size_at_256: int, height: int, minimum: int = 3) -> int:
    """The odd kernel size ``2 floor(size_at_256 H / 512) + 1`` (61 at 256, 7 at 32), at least ``minimum``."""
    k = 2 * math.floor(size_at_256 * height / 512) + 1
    return max(k, minimum)


# --------------------------------------------------------------------------------------------------
# Selections (inpainting / outpainting)
# --------------------------------------------------------------------------------------------------


class SelectionSVD(SVDPieces):
    """SVD pieces of a pixel selection: ``s = 1``, ``V^T x = x[perm]`` (observed first), ``U = I``."""

    def __init__(self, op: _Selection) -> None:
        self._op = op
        self.singulars = torch.ones(int(op.observed.numel()), dtype=torch.float64)

    @property
    def n(self) -> int:
        return int(self._op.perm.numel())

    def Vt(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)[:, self._op.perm]

    def V(self, c: Tensor) -> Tensor:
        return c[:, self._op.inverse_perm].reshape(c.shape[0], *self._op.x_shape)

    def Ut(self, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], -1)

    def U(self, c: Tensor) -> Tensor:
        return c.reshape(c.shape[0], -1)


class _Selection(LinearOperator):
    """``y = x_flat[observed]`` for a per-pixel mask shared by all channels (channel-first flattening)."""

    observed: Tensor
    perm: Tensor
    inverse_perm: Tensor

    def __init__(self, image_shape: tuple[int, ...], missing_hw: Tensor) -> None:
        super().__init__()
        self.x_shape = _check_image_shape(image_shape)
        c, h, w = self.x_shape
        missing = missing_hw.reshape(1, h, w).expand(c, h, w).reshape(-1)
        if bool(missing.all()) or not bool(missing.any()):
            raise UserInputError(f"{type(self).__name__} at size {h}x{w} would observe all or no pixels.")
        observed = torch.nonzero(~missing).squeeze(1)
        hidden = torch.nonzero(missing).squeeze(1)
        perm = torch.cat([observed, hidden])
        self.register_buffer("observed", observed, persistent=False)
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("inverse_perm", torch.argsort(perm), persistent=False)
        self.register_buffer("missing_mask", missing_hw.reshape(h, w).clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        _check_batch(x, self.x_shape, type(self).__name__)
        return x.reshape(x.shape[0], -1)[:, self.observed]

    def adjoint(self, y: Tensor) -> Tensor:
        y = y.reshape(y.shape[0], -1)
        out = torch.zeros(y.shape[0], self.perm.numel(), dtype=y.dtype, device=y.device)
        out = out.index_copy(1, self.observed, y)
        return out.reshape(y.shape[0], *self.x_shape)

    def svd(self) -> SelectionSVD:
        return SelectionSVD(self)


class OutpaintRightHalf(_Selection):
    """``y = x[:, :, :, : W//2]`` flattened: the left half is observed, columns ``W//2 .. W-1`` are missing."""

    def __init__(self, image_shape: tuple[int, ...]) -> None:
        _, h, w = _check_image_shape(image_shape)
        missing = torch.zeros(h, w, dtype=torch.bool)
        missing[:, w // 2 :] = True
        super().__init__(image_shape, missing)


def center_box(height: int, width: int) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)`` (exclusive ends) of the missing box: side ``round(150 H / 256)``,
    start ``round(50 H / 256)`` (rows and cols 50..199 at 256, as the reference; not exactly centred)."""
    spans = []
    for n in (height, width):
        start = round(50 * n / 256)
        side = max(1, min(round(150 * n / 256), n - start))
        spans.append((start, start + side))
    return spans[0][0], spans[0][1], spans[1][0], spans[1][1]


class InpaintCenterBox(_Selection):
    """``y = x`` outside the box ``[r0, r1) x [c0, c1)`` (see :func:`center_box`), flattened."""

    def __init__(self, image_shape: tuple[int, ...]) -> None:
        _, h, w = _check_image_shape(image_shape)
        r0, r1, c0, c1 = center_box(h, w)
        missing = torch.zeros(h, w, dtype=torch.bool)
        missing[r0:r1, c0:c1] = True
        super().__init__(image_shape, missing)


# --------------------------------------------------------------------------------------------------
# Super-resolution (block average)
# --------------------------------------------------------------------------------------------------


class BlockSVD(SVDPieces):
    """SVD pieces of the ``f x f`` block average: per block ``V^T`` is ``Q^T`` (``Q e_1 = 1/f``); the first
    ``r = C (H/f) (W/f)`` coordinates are the blocks' mean directions (singular ``1/f``) in ``y``'s order."""

    def __init__(self, op: SuperResolution) -> None:
        self._op = op
        c, h, w = op.x_shape
        f = op.factor
        self._dims = (c, h // f, w // f, f)
        self.singulars = torch.full((c * (h // f) * (w // f),), 1.0 / f, dtype=torch.float64)

    @property
    def n(self) -> int:
        return math.prod(self._op.x_shape)

    def _blocks(self, x: Tensor) -> Tensor:
        c, h, w, f = self._dims
        return x.reshape(x.shape[0], c, h, f, w, f).permute(0, 1, 2, 4, 3, 5).reshape(x.shape[0], c * h * w, f * f)

    def Vt(self, x: Tensor) -> Tensor:
        coef = self._blocks(x) @ self._op.basis.to(x)
        return torch.cat([coef[:, :, 0], coef[:, :, 1:].reshape(x.shape[0], -1)], dim=1)

    def V(self, c: Tensor) -> Tensor:
        ch, h, w, f = self._dims
        m = ch * h * w
        coef = torch.cat([c[:, :m, None], c[:, m:].reshape(c.shape[0], m, f * f - 1)], dim=2)
        blocks = coef @ self._op.basis.T.to(c)
        return (
            blocks.reshape(c.shape[0], ch, h, w, f, f).permute(0, 1, 2, 4, 3, 5).reshape(c.shape[0], *self._op.x_shape)
        )

    def Ut(self, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], -1)

    def U(self, c: Tensor) -> Tensor:
        ch, h, w, _ = self._dims
        return c.reshape(c.shape[0], ch, h, w)


class SuperResolution(LinearOperator):
    """``y[b, c, i, j] = mean(x[b, c, f i : f i + f, f j : f j + f])`` (singular values ``1/f``)."""

    basis: Tensor

    def __init__(self, factor: int, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.x_shape = _check_image_shape(image_shape)
        _, h, w = self.x_shape
        if int(factor) != factor or factor < 1:
            raise UserInputError(f"the super-resolution factor must be a positive integer, got {factor}.")
        self.factor = int(factor)
        if h % self.factor or w % self.factor:
            raise UserInputError(
                f"super-resolution x{self.factor} needs H and W divisible by {self.factor}, got {h}x{w}."
            )
        self.register_buffer("basis", ones_complement_basis(self.factor**2), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        _check_batch(x, self.x_shape, "SuperResolution")
        f = self.factor
        b, c, h, w = x.shape
        return x.reshape(b, c, h // f, f, w // f, f).mean(dim=(3, 5))

    def adjoint(self, y: Tensor) -> Tensor:
        f = self.factor
        up = y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
        return up / (f * f)

    def svd(self) -> BlockSVD:
        return BlockSVD(self)


# --------------------------------------------------------------------------------------------------
# Convolutions with reflection padding (Gaussian and motion blur)
# --------------------------------------------------------------------------------------------------


class _ReflectConv(LinearOperator):
    """``y = k * reflect_pad(x, K // 2)``: depthwise cross-correlation (``conv2d``) of every channel with
    one ``(K, K)`` kernel; same output size. The adjoint is the exact VJP of this linear map."""

    kernel: Tensor

    def __init__(self, image_shape: tuple[int, ...], kernel: Tensor) -> None:
        super().__init__()
        self.x_shape = _check_image_shape(image_shape)
        _, h, w = self.x_shape
        k = kernel.shape[-1]
        if kernel.ndim != 2 or kernel.shape[0] != k or k % 2 == 0:
            raise UserInputError(f"the blur kernel must be square with an odd side, got {tuple(kernel.shape)}.")
        if k // 2 >= min(h, w):
            raise UserInputError(
                f"a {k}x{k} kernel needs reflection padding {k // 2} < the image size {h}x{w}; use a smaller kernel."
            )
        self.register_buffer("kernel", kernel.to(torch.float64), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        _check_batch(x, self.x_shape, type(self).__name__)
        c = x.shape[1]
        p = self.kernel.shape[-1] // 2
        weight = self.kernel.to(x).expand(c, 1, *self.kernel.shape)
        return F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), weight, groups=c)

    def adjoint(self, y: Tensor) -> Tensor:
        _, vjp_fn = torch.func.vjp(self.forward, torch.zeros_like(y))
        return vjp_fn(y)[0]


def gaussian_kernel(kernel_size: int, sigma: float) -> Tensor:
    """The reference's kernel: ``scipy.ndimage.gaussian_filter`` of a centred delta (``K x K``, float64)."""
    delta = np.zeros((kernel_size, kernel_size))
    delta[kernel_size // 2, kernel_size // 2] = 1.0
    return torch.from_numpy(gaussian_filter(delta, sigma=sigma))


class GaussianBlur(_ReflectConv):
    """``y = g_sigma * reflect_pad(x)``; defaults scaled from 256: ``K = 61 H/256`` (odd, >= 3), ``sigma = 3 H/256``."""

    def __init__(self, image_shape: tuple[int, ...], kernel_size: int | None = None, sigma: float | None = None):
        _, h, _ = _check_image_shape(image_shape)
        kernel_size = scaled_kernel_size(61, h) if kernel_size is None else int(kernel_size)
        sigma = 3.0 * h / 256 if sigma is None else float(sigma)
        if not (math.isfinite(sigma) and sigma > 0):
            raise UserInputError(f"the blur sigma must be a positive finite number, got {sigma}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise UserInputError(f"the blur kernel size must be a positive odd integer, got {kernel_size}.")
        self.sigma = sigma
        super().__init__(image_shape, gaussian_kernel(kernel_size, sigma))


def motion_kernel(kernel_size: int, intensity: float = 0.5, seed: int = 0, n_steps: int | None = None) -> Tensor:
    r"""A seeded random camera-shake PSF (``K x K``, float64, non-negative, sums to 1).

    Our own generator (not LeviBorodenko's): a point moves ``n_steps`` (default ``4 K``) unit steps with
    heading ``theta`` and turn rate ``omega`` following a momentum random walk

    .. math:: \omega_{t+1} = 0.8\,\omega_t + 0.6\,\text{intensity}\,\xi_t,\quad \theta_{t+1} = \theta_t + \omega_{t+1},
              \quad p_{t+1} = p_t + (\cos\theta_{t+1}, \sin\theta_{t+1}) + \text{intensity}\,\eta_t / 4,

    with ``xi, eta ~ N(0, 1)`` and ``theta_0 ~ U(0, 2 pi)`` (``intensity = 0`` gives a straight segment).
    The path is centred on its bounding box, scaled to span ``(K - 1) (0.5 + 0.5 intensity)`` pixels
    (clamped to ``K - 1``), rasterised by bilinear splatting of 8 sub-samples per step, and normalised.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise UserInputError(f"the motion kernel size must be a positive odd integer, got {kernel_size}.")
    if not (0.0 <= intensity <= 1.0):
        raise UserInputError(f"the motion-blur intensity must lie in [0, 1], got {intensity}.")
    k = int(kernel_size)
    if k == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    steps = 4 * k if n_steps is None else int(n_steps)
    g = torch.Generator().manual_seed(int(seed))
    theta = float(torch.rand((), generator=g, dtype=torch.float64)) * 2.0 * math.pi
    xi = torch.randn(steps, generator=g, dtype=torch.float64)
    eta = torch.randn(steps, 2, generator=g, dtype=torch.float64)
    omega = 0.0
    points = [torch.zeros(2, dtype=torch.float64)]
    for t in range(steps):
        omega = 0.8 * omega + 0.6 * intensity * float(xi[t])
        theta += omega
        step = torch.tensor([math.cos(theta), math.sin(theta)], dtype=torch.float64) + intensity * eta[t] / 4
        points.append(points[-1] + step)
    path = torch.stack(points)  # (steps + 1, 2) as (x, y)
    # Sub-sample every segment so the rasterised trace is continuous.
    frac = torch.linspace(0.0, 1.0, 9, dtype=torch.float64)[:-1]
    dense = (path[:-1, None, :] + frac[None, :, None] * (path[1:] - path[:-1])[:, None, :]).reshape(-1, 2)
    dense = torch.cat([dense, path[-1:]])
    lo, hi = dense.min(0).values, dense.max(0).values
    span = float((hi - lo).max())
    target = min((k - 1) * (0.5 + 0.5 * intensity), k - 1)
    scale = target / span if span > 0 else 0.0
    coords = (dense - (lo + hi) / 2) * scale + (k - 1) / 2
    coords = coords.clamp(0.0, k - 1 - 1e-9)
    i0 = coords.floor().long()
    w1 = coords - i0
    kernel = torch.zeros(k, k, dtype=torch.float64)
    for dx in (0, 1):
        for dy in (0, 1):
            wx = w1[:, 0] if dx else 1 - w1[:, 0]
            wy = w1[:, 1] if dy else 1 - w1[:, 1]
            cols = (i0[:, 0] + dx).clamp(max=k - 1)
            rows = (i0[:, 1] + dy).clamp(max=k - 1)
            kernel.index_put_((rows, cols), wx * wy, accumulate=True)
    return kernel / kernel.sum()


class MotionBlur(_ReflectConv):
    """``y = k_motion * reflect_pad(x)`` with :func:`motion_kernel` (``K = 61 H/256`` odd >= 3, seed fixed)."""

    def __init__(
        self, image_shape: tuple[int, ...], kernel_size: int | None = None, intensity: float = 0.5, seed: int = 0
    ):
        _, h, _ = _check_image_shape(image_shape)
        kernel_size = scaled_kernel_size(61, h) if kernel_size is None else int(kernel_size)
        self.intensity, self.seed = float(intensity), int(seed)
        super().__init__(image_shape, motion_kernel(kernel_size, intensity, seed))


# --------------------------------------------------------------------------------------------------
# Non-linear operators
# --------------------------------------------------------------------------------------------------


class HighDynamicRange(Operator):
    """``y = clip(2 x, -1, 1)``."""

    def __init__(self, image_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.x_shape = None if image_shape is None else _check_image_shape(image_shape)

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(2.0 * x, -1.0, 1.0)


class PhaseRetrieval(Operator):
    r"""``y = |F pad((x + 1) / 2)|`` per channel, ``F`` the orthonormal centred 2-D FFT.

    The image is zero-padded by ``floor(oversample H / 8)`` rows (``... W / 8`` columns) on each side
    (256 -> 384 at ``oversample = 2``). The modulus is computed as ``sqrt(Re^2 + Im^2 + eps)`` with
    ``eps = 1e-12`` so that it stays differentiable at 0 (``|.|`` is not); this biases ``y`` by at most
    ``1e-6``.
    """

    eps = 1e-12

    def __init__(self, image_shape: tuple[int, ...], oversample: float = 2.0) -> None:
        super().__init__()
        self.x_shape = _check_image_shape(image_shape)
        if not (math.isfinite(oversample) and oversample >= 0):
            raise UserInputError(f"oversample must be a non-negative number, got {oversample}.")
        _, h, w = self.x_shape
        self.oversample = float(oversample)
        self.pad = (int(oversample * h / 8), int(oversample * w / 8))

    def forward(self, x: Tensor) -> Tensor:
        _check_batch(x, self.x_shape, "PhaseRetrieval")
        ph, pw = self.pad
        z = F.pad((x + 1.0) / 2.0, (pw, pw, ph, ph))
        spec = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(z, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
        return torch.sqrt(spec.real**2 + spec.imag**2 + self.eps)


# Differentiable JPEG (the reference's vendored ``src/utils/DiffJPEG``)
# --------------------------------------------------------------------------------------------------

# Standard JPEG quantisation tables (ITU-T T.81 Annex K), rows = vertical frequency, columns = horizontal.
_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8 for _ in range(4)),
)
# JFIF RGB -> YCbCr (the +128 chroma offset is added separately) and its inverse.
_RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168736, -0.331264, 0.5),
    (0.5, -0.418688, -0.081312),
)
_YCBCR_TO_RGB = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136, -0.714136),
    (1.0, 1.772, 0.0),
)


def jpeg_quality_factor(quality: float) -> float:
    """The table scale ``f(Q) = 50 / Q`` if ``Q < 50`` else ``(200 - 2 Q) / 100`` (``f(2) = 25``, ``f(100) = 0``)."""
    q = float(quality)
    if not (1.0 <= q <= 100.0):
        raise UserInputError(f"the JPEG quality must lie in [1, 100], got {quality}.")
    return 50.0 / q if q < 50 else (200.0 - 2.0 * q) / 100.0


def diff_round(x: Tensor) -> Tensor:
    """DiffJPEG's rounding surrogate ``round(x) + (x - round(x))^3``.

    ``torch.round`` has zero gradient, so the autograd derivative is ``3 (x - round(x))^2``: 0 at integers,
    3/4 at half-integers (as in the reference; it is *not* a straight-through estimator).
    """
    r = torch.round(x)
    return r + (x - r) ** 3


def dct_matrix(n: int = 8) -> Tensor:
    """The orthonormal DCT-II matrix ``D[u, i] = c_u cos((2 i + 1) u pi / (2 n))`` (float64, ``D D^T = I``)."""
    i = torch.arange(n, dtype=torch.float64)
    d = torch.cos((2 * i[None, :] + 1) * i[:, None] * math.pi / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


class JPEG(Operator):
    r"""Differentiable JPEG compression/decompression ``y = JPEG_Q(x)`` (the reference's DiffJPEG), same shape as ``x``.

    On ``p = 255 (x + 1) / 2``: for ``C = 3`` convert RGB to YCbCr (JFIF matrix, ``+128`` on Cb, Cr) and
    subsample the chroma 4:2:0 by ``2 x 2`` average pooling; for ``C = 1`` only the luminance path runs.
    Each channel minus 128 is cut into ``8 x 8`` blocks ``B``, transformed ``c = D B D^T`` (orthonormal
    DCT-II), quantised ``q = r(c / T)`` with ``r`` = :func:`diff_round` and ``T`` the standard luminance or
    chrominance table times :func:`jpeg_quality_factor`, dequantised ``c' = q T``, inverted ``D^T c' D + 128``,
    the chroma upsampled nearest-neighbour, converted back to RGB, clipped to ``[0, 255]`` (zero gradient
    outside) and mapped back to ``[-1, 1]``.

    Scaled table (reference: ``T = f(Q) table``, neither rounded nor clipped, unlike libjpeg): we keep it
    unrounded. ``clamp_steps`` (default ``True``) floors the steps at 1 as libjpeg does; this changes nothing
    for ``Q <= 95`` (smallest entry 10, ``f(95) = 0.1``), so ``jpeg2`` (``f = 25``) is exactly the
    reference, while at ``Q = 100`` the reference divides by a zero table. ``clamp_steps=False``
    reproduces the reference and is refused at ``Q = 100``.

    The tables are used in the standard orientation (row = vertical frequency). The public DiffJPEG code
    (mlomnitz) stores them transposed; ``transpose_tables=True`` reproduces that, in case the reference
    vendors it unchanged (not verified).

    Needs ``H, W`` divisible by 16 for ``C = 3`` (8 for ``C = 1``).
    """

    luma_steps: Tensor
    chroma_steps: Tensor
    dct: Tensor

    def __init__(
        self,
        quality: float = 2,
        image_shape: tuple[int, ...] | None = None,
        clamp_steps: bool = True,
        transpose_tables: bool = False,
    ) -> None:
        super().__init__()
        self.quality = float(quality)
        self.factor = jpeg_quality_factor(quality)
        self.clamp_steps = bool(clamp_steps)
        if not self.clamp_steps and self.factor == 0.0:
            raise UserInputError("JPEG quality 100 with clamp_steps=False divides by a zero quantisation table.")
        self.x_shape = None if image_shape is None else _check_image_shape(image_shape)
        if self.x_shape is not None:
            self._check_geometry(self.x_shape)
        steps = []
        for table in (_LUMA_TABLE, _CHROMA_TABLE):
            t = torch.tensor(table, dtype=torch.float64)
            t = (t.T if transpose_tables else t) * self.factor
            steps.append(t.clamp(min=1.0) if self.clamp_steps else t)
        self.register_buffer("luma_steps", steps[0], persistent=False)
        self.register_buffer("chroma_steps", steps[1], persistent=False)
        self.register_buffer("dct", dct_matrix(8), persistent=False)

    @staticmethod
    def _check_geometry(shape: tuple[int, ...]) -> None:
        c, h, w = shape
        block = 16 if c == 3 else 8
        if c not in (1, 3) or h % block or w % block:
            raise UserInputError(
                f"JPEG needs C in {{1, 3}} and H, W divisible by 16 (C = 3) or 8 (C = 1), got {tuple(shape)}."
            )

    def _codec(self, plane: Tensor, steps: Tensor) -> Tensor:
        """Quantise-dequantise one ``(B, h, w)`` plane in ``8 x 8`` DCT blocks (``plane`` in ``[0, 255]`` scale)."""
        b, h, w = plane.shape
        d = self.dct.to(plane)
        blocks = (plane - 128.0).reshape(b, h // 8, 8, w // 8, 8)
        coef = torch.einsum("ux,bixjy,vy->biujv", d, blocks, d)
        t = steps.to(plane)[None, None, :, None, :]
        coef = diff_round(coef / t) * t
        out = torch.einsum("ux,biujv,vy->bixjy", d, coef, d)
        return out.reshape(b, h, w) + 128.0

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise UserInputError(f"JPEG expects images of shape (B, C, H, W), got {tuple(x.shape)}.")
        if self.x_shape is not None:
            _check_batch(x, self.x_shape, "JPEG")
        self._check_geometry(tuple(x.shape[1:]))
        p = (x + 1.0) * 127.5
        if x.shape[1] == 1:
            out = self._codec(p[:, 0], self.luma_steps)[:, None]
        else:
            m = torch.tensor(_RGB_TO_YCBCR, dtype=x.dtype, device=x.device)
            ycc = torch.einsum("kc,bchw->bkhw", m, p)
            luma = self._codec(ycc[:, 0], self.luma_steps)
            chroma = F.avg_pool2d(ycc[:, 1:] + 128.0, 2)
            chroma = torch.stack([self._codec(chroma[:, i], self.chroma_steps) for i in range(2)], dim=1)
            chroma = chroma.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1) - 128.0
            m_inv = torch.tensor(_YCBCR_TO_RGB, dtype=x.dtype, device=x.device)
            out = torch.einsum("ck,bkhw->bchw", m_inv, torch.cat([luma[:, None], chroma], dim=1))
        return torch.clamp(out, 0.0, 255.0) / 127.5 - 1.0


# --------------------------------------------------------------------------------------------------
# Non-linear blur (deterministic stand-in for the reference's bkse operator)
# --------------------------------------------------------------------------------------------------


class NonlinearBlur(Operator):
    r"""Motion blur in linear light, the documented default for the ``nonlinear_blur`` task.

    **This is not the reference's operator.** The reference uses the bkse KernelWizard network
    (GOPRO_wVAE) with pretrained weights, which cannot be downloaded here; a user who has them passes
    them to :func:`make_operator` (``kernel_wizard=PATH``, CLI ``--kernel-wizard PATH``) and gets
    :class:`~mgdm_audio.image.kernel_wizard.KernelWizardBlur`. Without them, as real camera blur is
    synthesised (GOPRO-style averaging of gamma-expanded frames):

    .. math:: y = 2\,\mathrm{clamp}\big((k * \mathrm{reflect\_pad}(u^\gamma) + \epsilon)^{1/\gamma}
              - \epsilon^{1/\gamma},\ 0,\ 1\big) - 1,\qquad u = \max((x + 1) / 2,\ 0),

    with ``k`` the seeded :func:`motion_kernel` (as :class:`MotionBlur`, ``K = 61 H/256`` odd >= 3).
    ``epsilon = 1e-8`` keeps the ``1/gamma`` power differentiable at 0 (gradient at most
    ``eps^(1/gamma - 1) / gamma``, about ``1e4`` at ``gamma = 2.2``); ``eps^(1/gamma)`` is subtracted back so
    0 maps to 0, which leaves a bias of at most ``2 eps^(1/gamma)`` (``4.6e-4`` on ``[-1, 1]``, below one
    8-bit grey level). With ``gamma = 1`` the operator equals ``clamp(MotionBlur(x), -1, 1)`` up to float
    rounding. Negative ``u`` is clipped to 0 so non-integer powers stay real.
    """

    eps = 1e-8

    def __init__(
        self,
        image_shape: tuple[int, ...],
        kernel_size: int | None = None,
        gamma: float = 2.2,
        seed: int = 0,
        intensity: float = 0.5,
    ) -> None:
        super().__init__()
        if not (math.isfinite(gamma) and gamma > 0):
            raise UserInputError(f"gamma must be a positive finite number, got {gamma}.")
        self.gamma = float(gamma)
        self.blur = MotionBlur(image_shape, kernel_size, intensity, seed)
        self.x_shape = self.blur.x_shape
        self.seed = int(seed)

    @property
    def kernel(self) -> Tensor:
        return self.blur.kernel

    def forward(self, x: Tensor) -> Tensor:
        linear = torch.clamp((x + 1.0) / 2.0, min=0.0) ** self.gamma
        blurred = (self.blur(linear) + self.eps) ** (1.0 / self.gamma) - self.eps ** (1.0 / self.gamma)
        return 2.0 * torch.clamp(blurred, 0.0, 1.0) - 1.0


# --------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------


def make_operator(task: str, image_shape: tuple[int, ...], kernel_wizard: str | Path | None = None) -> Operator:
    """The operator of a task name (the reference's image tasks) at ``image_shape = (C, H, W)``;
    :class:`UserInputError` otherwise.

    ``kernel_wizard``: a bkse KernelWizard weights file (e.g. ``GOPRO_wVAE.pth`` or a ``.safetensors``
    conversion); ``nonlinear_blur`` then uses the reference's network instead of the stand-in. Other
    tasks ignore it.
    """
    shape = _check_image_shape(image_shape)
    if task == "outpainting_half":
        return OutpaintRightHalf(shape)
    if task == "inpainting_center":
        return InpaintCenterBox(shape)
    if task == "sr4":
        return SuperResolution(4, shape)
    if task == "sr16":
        return SuperResolution(16, shape)
    if task == "blur":
        return GaussianBlur(shape)
    if task == "motion_blur":
        return MotionBlur(shape)
    if task == "phase_retrieval":
        return PhaseRetrieval(shape)
    if task == "high_dynamic_range":
        return HighDynamicRange(shape)
    if task == "jpeg2":
        return JPEG(2, shape)
    if task == "nonlinear_blur":
        if kernel_wizard is not None:
            from mgdm_audio.image.kernel_wizard import KernelWizardBlur, load_kernel_wizard

            return KernelWizardBlur(shape, load_kernel_wizard(kernel_wizard))
        return NonlinearBlur(shape)
    raise UserInputError(f"unknown image task {task!r}; known tasks: {', '.join(TASKS)}.")
