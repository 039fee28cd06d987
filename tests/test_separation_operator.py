"""The separation operators: adjointness, SVD pieces, pinv, stem sets and bad input."""

import pytest
import torch

from mgdm_audio.audio.separation import (
    MUSDB4,
    SLAKH4,
    MixtureInpainting,
    MixtureWithKnownStems,
    StemImputation,
    SumOfStems,
    get_stem_set,
)
from mgdm_audio.core.errors import UserInputError


def _rand(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _gap_mask(length):
    mask = torch.ones(length, dtype=torch.bool)
    mask[length // 3 : length // 2] = False
    return mask


OPERATORS = {
    "sum2": lambda t: SumOfStems(2, t),
    "sum4": lambda t: SumOfStems(4, t),
    "sum5": lambda t: SumOfStems(5, t),
    "impute": lambda t: StemImputation(4, [0, 2], t),
    "inpaint": lambda t: MixtureInpainting(4, _gap_mask(t)),
    "known_edges": lambda t: MixtureWithKnownStems(4, ~_gap_mask(t)),
    "known_head": lambda t: MixtureWithKnownStems(3, torch.arange(t) < 5),
    # many runs of known and unknown samples (the operator slices runs)
    "known_scattered": lambda t: MixtureWithKnownStems(4, (torch.arange(t) % 7 < 3) | (torch.arange(t) % 5 == 0)),
}


@pytest.mark.parametrize("name", OPERATORS)
def test_adjointness_and_linearity(name):
    op = OPERATORS[name](37)
    x = _rand((3, op.x_shape[0], 37), 0)
    y = _rand(tuple(op(x).shape), 1)
    lhs, rhs = (op(x) * y).sum(), (x * op.adjoint(y)).sum()
    assert abs(float(lhs - rhs)) <= 1e-12 * abs(float(lhs))
    x2 = _rand(x.shape, 2)
    assert torch.allclose(op(2.0 * x - x2), 2.0 * op(x) - op(x2), atol=1e-12)


@pytest.mark.parametrize("name", OPERATORS)
def test_svd_pieces_reconstruct(name):
    op = OPERATORS[name](29)
    pieces = op.svd()
    x = _rand((2, op.x_shape[0], 29), 3)
    c = pieces.Vt(x)
    r = pieces.rank
    assert c.shape == (2, x[0].numel()) and pieces.n == x[0].numel()
    assert torch.allclose(pieces.U(pieces.singulars.to(c) * c[:, :r]), op(x), atol=1e-12)
    assert torch.allclose(pieces.V(c), x, atol=1e-12)
    assert torch.allclose(c.norm(dim=1), x.reshape(2, -1).norm(dim=1), atol=1e-12)  # orthogonal
    xp = op.pinv(op(x))
    assert torch.allclose(op(xp), op(x), atol=1e-12)  # A A^+ A = A
    assert torch.allclose(pieces.Vt(xp)[:, r:], torch.zeros_like(c[:, r:]), atol=1e-12)  # A^+ y in range(A^T)


def test_sum_of_stems_values_and_pinv():
    op = SumOfStems(4)
    x = _rand((2, 4, 11), 4)
    assert torch.equal(op(x), x.sum(1, keepdim=True))
    y = op(x)
    assert torch.allclose(op.pinv(y), y.expand(-1, 4, -1) / 4)
    assert op.svd() is None  # no fixed length, no SVD pieces
    assert float(SumOfStems(4, 8).svd().singulars[0]) == pytest.approx(2.0)  # MSDM's s = 2 = sqrt(4)
    assert op.is_channel_sum


def test_imputation_and_inpainting_values():
    x = _rand((1, 4, 10), 5)
    assert torch.equal(StemImputation(4, [1, 3])(x), x[:, [1, 3]])
    mask = _gap_mask(10)
    assert torch.equal(MixtureInpainting(4, mask)(x), x.sum(1, keepdim=True)[:, :, mask])


def test_stem_sets():
    assert SLAKH4.stems == ("bass", "drums", "guitar", "piano")
    assert MUSDB4.stems == ("vocals", "drums", "bass", "other")
    assert get_stem_set("SLAKH4") is SLAKH4 and SLAKH4.index("guitar") == 2
    with pytest.raises(UserInputError, match="unknown stem set"):
        get_stem_set("slakh5")
    with pytest.raises(UserInputError, match="no stem 'vocals'"):
        SLAKH4.index("vocals")


def test_bad_input():
    with pytest.raises(UserInputError, match="at least 2 stems"):
        SumOfStems(1)
    with pytest.raises(UserInputError, match="shape"):
        SumOfStems(4)(torch.zeros(1, 3, 5))
    with pytest.raises(UserInputError, match="shape"):
        SumOfStems(4, 5)(torch.zeros(1, 4, 6))
    with pytest.raises(UserInputError, match="distinct"):
        StemImputation(4, [0, 0])
    with pytest.raises(UserInputError, match="nothing is left"):
        StemImputation(2, [0, 1])
    with pytest.raises(UserInputError, match="no sample"):
        MixtureInpainting(4, torch.zeros(5, dtype=torch.bool))


def test_known_stems_observation():
    known = torch.zeros(12, dtype=torch.bool)
    known[:3] = True
    op = MixtureWithKnownStems(4, known)
    x = _rand((2, 4, 12), 6)
    y = op.observe(x.sum(1, keepdim=True), x)
    assert torch.equal(op(x), y) and y.shape == (2, 4 * 3 + 9)
    with pytest.raises(UserInputError, match="nothing is left"):
        MixtureWithKnownStems(4, torch.ones(5, dtype=torch.bool))
