"""Image operators (the MGDM reference code's image tasks): adjointness, SVD pieces, geometry, determinism, factory
errors."""

import math

import pytest
import torch

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.operators import LinearOperator
from mgdm_audio.image.operators import (
    JPEG,
    TASKS,
    GaussianBlur,
    HighDynamicRange,
    InpaintCenterBox,
    MotionBlur,
    NonlinearBlur,
    OutpaintRightHalf,
    PhaseRetrieval,
    SuperResolution,
    dct_matrix,
    diff_round,
    jpeg_quality_factor,
    make_operator,
    motion_kernel,
)

SHAPES = [(1, 32, 32), (3, 64, 64)]
LINEAR_TASKS = ["outpainting_half", "inpainting_center", "sr4", "sr16", "blur", "motion_blur"]
SVD_TASKS = ["outpainting_half", "inpainting_center", "sr4", "sr16"]


def _rand(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("task", LINEAR_TASKS)
def test_adjointness(task, shape):
    op = make_operator(task, shape)
    assert isinstance(op, LinearOperator)
    x = _rand((2, *shape), 0)
    y = _rand(tuple(op(x).shape), 1)
    lhs = (op(x) * y).sum()
    rhs = (x * op.adjoint(y)).sum()
    assert abs(float(lhs - rhs)) <= 1e-10 * abs(float(lhs))
    # linearity as well
    x2 = _rand((2, *shape), 2)
    assert torch.allclose(op(2.0 * x - x2), 2.0 * op(x) - op(x2), atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("task", SVD_TASKS)
def test_svd_pieces(task, shape):
    op = make_operator(task, shape)
    pieces = op.svd()
    x = _rand((2, *shape), 3)
    r = pieces.rank
    c = pieces.Vt(x)
    assert c.shape == (2, pieces.n) and pieces.n == x[0].numel()
    # A x = U (s * (V^T x)[:r]) and V V^T = I
    assert torch.allclose(pieces.U(pieces.singulars.to(c) * c[:, :r]), op(x), atol=1e-12)
    assert torch.allclose(pieces.V(c), x, atol=1e-12)
    # orthogonality: ||V^T x|| = ||x||
    assert torch.allclose(c.norm(dim=1), x.reshape(2, -1).norm(dim=1), atol=1e-12)
    # pinv reproduces x on the range of A^T and is consistent: A A^+ A x = A x
    xp = op.pinv(op(x))
    assert torch.allclose(pieces.Vt(xp)[:, :r], c[:, :r], atol=1e-12)
    assert torch.allclose(pieces.Vt(xp)[:, r:], torch.zeros_like(c[:, r:]), atol=1e-12)
    assert torch.allclose(op(xp), op(x), atol=1e-12)


def test_selection_pinv_fills_observed_pixels():
    op = OutpaintRightHalf((1, 32, 32))
    x = _rand((1, 1, 32, 32), 4)
    xp = op.pinv(op(x))
    assert torch.equal(xp[..., :16], x[..., :16])
    assert torch.count_nonzero(xp[..., 16:]) == 0


def test_mask_counts_at_256():
    half = OutpaintRightHalf((1, 256, 256))
    box = InpaintCenterBox((1, 256, 256))
    assert int(half.missing_mask.sum()) == 32768 and bool(half.missing_mask[:, 128:].all())
    assert int(box.missing_mask.sum()) == 22500
    rows = box.missing_mask.any(dim=1).nonzero().squeeze(1)
    assert int(rows[0]) == 50 and int(rows[-1]) == 199
    assert make_operator("inpainting_center", (3, 256, 256))(torch.zeros(1, 3, 256, 256)).shape == (1, 129108)
    assert make_operator("outpainting_half", (3, 256, 256))(torch.zeros(1, 3, 256, 256)).shape == (1, 98304)


@pytest.mark.parametrize("factor", [4, 16])
def test_super_resolution_is_block_mean(factor):
    x = _rand((2, 3, 64, 64), 5)
    y = SuperResolution(factor, (3, 64, 64))(x)
    expected = torch.nn.functional.avg_pool2d(x, factor)
    assert y.shape == (2, 3, 64 // factor, 64 // factor)
    assert torch.allclose(y, expected, atol=1e-12)
    assert torch.allclose(y[0, 1, 1, 2], x[0, 1, factor : 2 * factor, 2 * factor : 3 * factor].mean())
    assert torch.allclose(SuperResolution(factor, (3, 64, 64)).svd().singulars, torch.tensor(1.0 / factor).double())


def test_gaussian_blur_kernel_and_constants():
    op = GaussianBlur((3, 256, 256))
    assert op.kernel.shape == (61, 61) and op.sigma == 3.0
    assert torch.allclose(op.kernel.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.equal(op.kernel, op.kernel.flip(0)) and torch.equal(op.kernel, op.kernel.T)
    small = GaussianBlur((1, 32, 32))
    assert small.kernel.shape == (7, 7)
    # a constant image is unchanged (normalised kernel, reflection padding)
    x = torch.full((1, 1, 32, 32), 0.3, dtype=torch.float64)
    assert torch.allclose(small(x), x, atol=1e-12)


def test_motion_kernel_deterministic_normalised():
    k1, k2, k3 = motion_kernel(15, 0.5, 0), motion_kernel(15, 0.5, 0), motion_kernel(15, 0.5, 1)
    assert torch.equal(k1, k2)
    assert not torch.allclose(k1, k3)
    for k in (k1, k3, motion_kernel(61, 0.5, 0), motion_kernel(7, 0.0, 3)):
        assert bool((k >= 0).all())
        assert abs(float(k.sum()) - 1.0) < 1e-12
    op = MotionBlur((1, 32, 32))
    assert op.kernel.shape == (7, 7) and torch.equal(op.kernel, motion_kernel(7, 0.5, 0))
    # a motion kernel is not a point: it spreads mass over several pixels
    assert int((motion_kernel(61, 0.5, 0) > 0).sum()) > 61


def test_high_dynamic_range_is_clip():
    x = _rand((3, 1, 8, 8), 6)
    assert torch.equal(HighDynamicRange()(x), torch.clamp(2 * x, -1, 1))
    assert not isinstance(make_operator("high_dynamic_range", (1, 8, 8)), LinearOperator)


def test_phase_retrieval_shape_and_value():
    op = make_operator("phase_retrieval", (3, 256, 256))
    assert op(torch.zeros(1, 3, 256, 256)).shape == (1, 3, 384, 384)
    small = PhaseRetrieval((1, 32, 32))
    x = _rand((2, 1, 32, 32), 7)
    y = small(x)
    assert y.shape == (2, 1, 48, 48)
    # Parseval (orthonormal FFT): ||y||^2 = ||(x + 1) / 2||^2 up to the eps inside the sqrt
    energy = ((x + 1) / 2).pow(2).sum(dim=(1, 2, 3))
    assert torch.allclose(y.pow(2).sum(dim=(1, 2, 3)), energy, rtol=1e-8)
    # DC term in the centre equals sum / sqrt(N)
    assert torch.allclose(y[:, 0, 24, 24], ((x + 1) / 2).sum(dim=(1, 2, 3)) / 48, rtol=1e-10)
    # differentiable even where the spectrum vanishes (zero image -> only DC term nonzero)
    z = torch.full((1, 1, 32, 32), -1.0, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(small(z).sum(), z)
    assert torch.isfinite(g).all()


def test_make_operator_errors():
    with pytest.raises(UserInputError, match="known tasks: outpainting_half"):
        make_operator("jpeg10", (1, 32, 32))
    with pytest.raises(UserInputError, match="divisible by 16"):
        make_operator("sr16", (1, 40, 40))
    with pytest.raises(UserInputError, match="image_shape"):
        make_operator("blur", (32, 32))
    with pytest.raises(UserInputError, match="reflection padding"):
        GaussianBlur((1, 8, 8), kernel_size=17)
    with pytest.raises(UserInputError):
        SuperResolution(4, (1, 32, 32))(torch.zeros(1, 1, 16, 16))
    assert set(TASKS) == set(LINEAR_TASKS) | {"phase_retrieval", "high_dynamic_range", "jpeg2", "nonlinear_blur"}


def test_float32_and_gradients_flow():
    for task in TASKS:
        op = make_operator(task, (1, 32, 32))
        x = (torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(8)) * 2 - 1).requires_grad_(True)
        y = op(x)
        assert y.dtype == torch.float32
        (g,) = torch.autograd.grad(y.pow(2).sum(), x)
        assert torch.isfinite(g).all() and g.abs().sum() > 0


# --------------------------------------------------------------------------------------------------
# JPEG and non-linear blur
# --------------------------------------------------------------------------------------------------


def _smooth(shape, seed):
    """A smooth image in [-0.9, 0.9]: a sum of low-frequency cosines with random amplitudes and phases."""
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    i = torch.arange(h, dtype=torch.float64)[:, None]
    j = torch.arange(w, dtype=torch.float64)[None, :]
    x = torch.zeros(shape, dtype=torch.float64)
    for fu in range(3):
        for fv in range(3):
            amp = (torch.rand(b, c, 1, 1, generator=g, dtype=torch.float64) - 0.5) * 0.3
            ph = torch.rand(2, generator=g, dtype=torch.float64) * 2 * math.pi
            x = x + amp * torch.cos(math.pi * fu * i / h + ph[0]) * torch.cos(math.pi * fv * j / w + ph[1])
    return x.clamp(-0.9, 0.9)


def _psnr(a, b):
    """PSNR on [0, 1] images (peak 1), as the reference's metric, over the whole batch."""
    return float(10 * torch.log10(1.0 / (((a - b) / 2) ** 2).mean()))


def test_jpeg_quality_factor_and_tables():
    assert jpeg_quality_factor(2) == 25.0 and jpeg_quality_factor(50) == 1.0
    assert jpeg_quality_factor(75) == 0.5 and jpeg_quality_factor(100) == 0.0
    op = JPEG(2)
    assert float(op.luma_steps[0, 0]) == 400.0 and float(op.luma_steps[0, 1]) == 275.0
    assert float(op.chroma_steps[0, 0]) == 425.0 and float(op.chroma_steps[7, 7]) == 2475.0
    assert torch.equal(JPEG(2, transpose_tables=True).luma_steps, op.luma_steps.T)
    # Q = 100: the reference's zero table is floored at 1 (clamp_steps) or refused
    assert torch.equal(JPEG(100).luma_steps, torch.ones(8, 8, dtype=torch.float64))
    with pytest.raises(UserInputError, match="zero quantisation table"):
        JPEG(100, clamp_steps=False)
    with pytest.raises(UserInputError, match="quality"):
        JPEG(0)
    with pytest.raises(UserInputError, match="divisible by 16"):
        JPEG(2)(torch.zeros(1, 3, 24, 24))
    d = dct_matrix(8)
    assert torch.allclose(d @ d.T, torch.eye(8, dtype=torch.float64), atol=1e-14)
    assert torch.allclose(d[0], torch.full((8,), 1 / math.sqrt(8), dtype=torch.float64))


def test_diff_round_value_and_gradient():
    # the reference surrogate round(x) + (x - round(x))^3 with torch.round's zero gradient: d/dx = 3 r^2
    x = torch.tensor([-2.0, 0.0, 3.0, 0.25, -1.25, 2.4], dtype=torch.float64, requires_grad=True)
    y = diff_round(x)
    r = torch.tensor([0.0, 0.0, 0.0, 0.25, -0.25, 0.4], dtype=torch.float64)
    assert torch.allclose(y, torch.round(x.detach()) + r**3, atol=1e-15)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(g, 3 * r**2, atol=1e-15)
    assert torch.equal(g[:3], torch.zeros(3, dtype=torch.float64))  # flat at integers, not straight-through


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_quality_100_is_near_identity_and_2_is_not(channels):
    x = _smooth((2, channels, 32, 32), 10)
    y100 = JPEG(100)(x)
    y2 = JPEG(2)(x)
    assert y100.shape == x.shape and y2.shape == x.shape
    assert _psnr(y100, x) > 45.0
    assert _psnr(JPEG(50)(x), x) > 35.0
    # quality ordering on the smooth image, and heavy loss on a rough one
    assert _psnr(y2, x) < _psnr(JPEG(10)(x), x) < _psnr(y100, x)
    rough = _rand((2, channels, 32, 32), 11)
    assert _psnr(JPEG(2)(rough), rough) < 15.0
    assert float(y2.min()) >= -1.0 and float(y2.max()) <= 1.0


def test_jpeg_quality_2_block_means_follow_dc_quantisation():
    # C = 1: the 8x8 block mean m (0..255 scale) has DC = 8 (m - 128), quantised with step 16 * 25 = 400,
    # so the output block mean is 128 + 50 diff_round((m - 128) / 50) exactly (AC terms have zero block mean)
    x = 0.5 * _smooth((2, 1, 32, 32), 12)
    y = JPEG(2)(x)
    m = torch.nn.functional.avg_pool2d((x + 1) * 127.5, 8)
    expected = 128 + 50 * diff_round((m - 128) / 50)
    assert torch.allclose(torch.nn.functional.avg_pool2d((y + 1) * 127.5, 8), expected, atol=1e-9)
    # hence each block mean moves by at most max(r - r^3) * 50 = 18.75 grey levels
    assert float((torch.nn.functional.avg_pool2d(y - x, 8)).abs().max()) <= 18.75 / 127.5 + 1e-9
    # C = 3: luminance and 16x16 chroma DC steps 400 / 425: block means preserved to within ~0.3
    x3 = 0.5 * _smooth((2, 3, 32, 32), 13)
    err = torch.nn.functional.avg_pool2d(JPEG(2)(x3) - x3, 16).abs().max()
    assert float(err) < 0.3


def test_jpeg_gradients_and_determinism():
    for channels in (1, 3):
        x = _smooth((2, channels, 32, 32), 14).requires_grad_(True)
        op = make_operator("jpeg2", (channels, 32, 32))
        assert isinstance(op, JPEG) and op.quality == 2
        y = op(x)
        (g,) = torch.autograd.grad(y.pow(2).sum(), x)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
        assert torch.equal(op(x.detach()), y.detach())
        # chains are independent: the output of image 0 does not depend on image 1
        (g0,) = torch.autograd.grad(op(x)[0].sum(), x)
        assert torch.count_nonzero(g0[1]) == 0


def test_nonlinear_blur_gamma_one_is_motion_blur():
    x = _rand((2, 3, 32, 32), 15)
    for seed, k in ((0, None), (3, 5)):
        nl = NonlinearBlur((3, 32, 32), kernel_size=k, gamma=1.0, seed=seed)
        mb = MotionBlur((3, 32, 32), kernel_size=k, seed=seed)
        assert torch.equal(nl.kernel, mb.kernel)
        assert torch.allclose(nl(x), mb(x), atol=1e-12)


def test_nonlinear_blur_values_determinism_gradients():
    shape = (3, 32, 32)
    x = _rand((2, *shape), 16)
    op = make_operator("nonlinear_blur", shape)
    assert isinstance(op, NonlinearBlur) and op.gamma == 2.2 and op.kernel.shape == (7, 7)
    y = op(x)
    assert y.shape == x.shape
    assert torch.equal(y, NonlinearBlur(shape)(x))
    assert not torch.allclose(y, NonlinearBlur(shape, seed=1)(x))
    # power-mean inequality: blurring in linear light (gamma > 1) is never darker than blurring x itself
    assert bool((y >= MotionBlur(shape)(x) - 1e-3).all())
    assert float((y - MotionBlur(shape)(x)).max()) > 0.05
    # a constant image is unchanged; any input (also out of range) gives an output in [-1, 1]
    c = torch.full((1, *shape), 0.3, dtype=torch.float64)
    bias = 2 * NonlinearBlur.eps ** (1 / 2.2)
    assert float((op(c) - c).abs().max()) <= bias and float((op(c) - c).abs().max()) > 0.1 * bias
    wild = 3 * _rand((2, *shape), 17)
    out = op(wild)
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    # differentiable at black (u = 0) thanks to the epsilon
    z = torch.full((1, *shape), -1.0, dtype=torch.float64)
    z[..., 10:20, 10:20] = 0.5
    z.requires_grad_(True)
    (g,) = torch.autograd.grad(op(z).sum(), z)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_phase_retrieval_is_invariant_to_translation_and_point_reflection():
    """|F| cannot tell an image from its shifts inside the zero-padded canvas or its 180-degree rotation (the
    trivial ambiguities of phase retrieval); content is kept away from the border, where (x + 1) / 2 is 0."""
    op = PhaseRetrieval((1, 32, 32))
    x = torch.full((2, 1, 32, 32), -1.0, dtype=torch.float64)
    x[:, :, 8:24, 6:22] = _rand((2, 1, 16, 16), 11)
    y = op(x)
    shifted = torch.roll(x, shifts=(3, -2), dims=(2, 3))
    rotated = torch.flip(x, dims=(2, 3))
    torch.testing.assert_close(op(shifted), y, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(op(rotated), y, rtol=1e-9, atol=1e-9)
    other = x.clone()
    other[:, :, 8:24, 6:22] = _rand((2, 1, 16, 16), 12)
    assert (op(other) - y).abs().max() > 1e-2  # a different image gives different magnitudes


@pytest.mark.parametrize("task", TASKS)
def test_batch_equals_per_image(task):
    op = make_operator(task, (1, 32, 32))
    x = _rand((3, 1, 32, 32), 21).float()
    batched = op(x)
    single = torch.cat([op(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
