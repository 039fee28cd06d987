"""Image operators (reference §6): adjointness, SVD pieces, geometry, determinism and factory errors."""

import pytest
import torch

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.operators import LinearOperator
from mgdm_audio.image.operators import (
    TASKS,
    GaussianBlur,
    HighDynamicRange,
    InpaintCenterBox,
    MotionBlur,
    OutpaintRightHalf,
    PhaseRetrieval,
    SuperResolution,
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
        make_operator("jpeg2", (1, 32, 32))
    with pytest.raises(UserInputError, match="divisible by 16"):
        make_operator("sr16", (1, 40, 40))
    with pytest.raises(UserInputError, match="image_shape"):
        make_operator("blur", (32, 32))
    with pytest.raises(UserInputError, match="reflection padding"):
        GaussianBlur((1, 8, 8), kernel_size=17)
    with pytest.raises(UserInputError):
        SuperResolution(4, (1, 32, 32))(torch.zeros(1, 1, 16, 16))
    assert set(TASKS) == set(LINEAR_TASKS) | {"phase_retrieval", "high_dynamic_range"}


def test_float32_and_gradients_flow():
    for task in TASKS:
        op = make_operator(task, (1, 32, 32))
        x = (torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(8)) * 2 - 1).requires_grad_(True)
        y = op(x)
        assert y.dtype == torch.float32
        (g,) = torch.autograd.grad(y.pow(2).sum(), x)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
