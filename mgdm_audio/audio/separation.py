r"""The music source separation problem: stem sets and the mixing operator (MSDM: the mixture is the sum of the stems).

A multi-source signal is a batch ``x`` of shape ``(B, S, T)`` (``S`` stems, ``T`` samples); its mixture is

.. math:: y = A x = \sum_{s=1}^{S} x_s, \qquad y \in \mathbb R^{B \times 1 \times T}.

:class:`SumOfStems` is linear; its adjoint copies ``y`` to every stem. Its SVD acts per time sample: the
``1 x S`` row of ones has the single singular value ``sqrt(S)`` with right vector ``ones / sqrt(S)`` (the
MSDM reference's ``s = 2 = sqrt(4)``); the null space of each sample is spanned by the other columns of a fixed
orthogonal ``S x S`` Householder matrix ``Q`` (float64, first column ``ones / sqrt(S)``). ``Vt(x)`` returns
``(B, S T)`` with the ``T`` range coordinates first, then the ``T (S - 1)`` null-space coordinates (time-major);
``U`` is the identity on the flattened mixture; ``pinv(y) = y / S`` on every stem. No dense ``T x T`` or
``ST x ST`` matrix is ever formed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mgdm_audio.core.errors import InternalError, UserInputError
from mgdm_audio.core.operators import LinearOperator, SVDPieces, ones_complement_basis


@dataclass(frozen=True)
class StemSet:
    """A named, ordered set of stems (the channel order of ``x``)."""

    name: str
    stems: tuple[str, ...]

    @property
    def n_stems(self) -> int:
        return len(self.stems)

    def index(self, stem: str) -> int:
        if stem not in self.stems:
            stems = ", ".join(self.stems)
            raise UserInputError(f"stem set '{self.name}' has no stem '{stem}'; its stems are: {stems}.")
        return self.stems.index(stem)


SLAKH4 = StemSet("slakh4", ("bass", "drums", "guitar", "piano"))
"""Slakh2100's four stems in MSDM's channel order (the Dirac constraint's ``source_id = 0`` is the bass)."""
MUSDB4 = StemSet("musdb4", ("vocals", "drums", "bass", "other"))
"""MUSDB18's four targets in the dataset's order."""
STEM_SETS: dict[str, StemSet] = {s.name: s for s in (SLAKH4, MUSDB4)}


def get_stem_set(name: str) -> StemSet:
    """The stem set registered under ``name`` (case-insensitive); one clear error for an unknown name."""
    key = str(name).lower()
    if key not in STEM_SETS:
        raise UserInputError(f"unknown stem set '{name}'; choose one of: {', '.join(STEM_SETS)}.")
    return STEM_SETS[key]


class SumOfStemsSVD(SVDPieces):
    """SVD pieces of :class:`SumOfStems` for a fixed length ``T`` (see the module docstring)."""

    def __init__(self, n_stems: int, length: int, basis: Tensor) -> None:
        self.n_stems, self.length = n_stems, length
        self._basis = basis
        self.singulars = torch.full((length,), math.sqrt(n_stems), dtype=torch.float64)

    @property
    def n(self) -> int:
        return self.n_stems * self.length

    def _check_x(self, x: Tensor) -> None:
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.n_stems, self.length):
            raise InternalError(
                f"SumOfStems' SVD expects stems of shape (B, {self.n_stems}, {self.length}), got {tuple(x.shape)}."
            )

    def Vt(self, x: Tensor) -> Tensor:
        self._check_x(x)
        coef = x.transpose(1, 2) @ self._basis.to(x)  # (B, T, S): per sample, coordinates in the basis Q
        return torch.cat([coef[:, :, 0], coef[:, :, 1:].reshape(x.shape[0], -1)], dim=1)

    def V(self, c: Tensor) -> Tensor:
        b, t, s = c.shape[0], self.length, self.n_stems
        if c.ndim != 2 or c.shape[1] != s * t:
            raise InternalError(f"SumOfStems' V expects coefficients of shape (B, {s * t}), got {tuple(c.shape)}.")
        coef = torch.cat([c[:, :t, None], c[:, t:].reshape(b, t, s - 1)], dim=2)
        return (coef @ self._basis.T.to(c)).transpose(1, 2)

    def Ut(self, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], -1)

    def U(self, c: Tensor) -> Tensor:
        return c.reshape(c.shape[0], 1, self.length)

    def pinv(self, y: Tensor) -> Tensor:
        """``A^+ y = y / S`` on every stem (the same as ``V diag(1/s) U^T y``, without the basis)."""
        return y.reshape(y.shape[0], 1, self.length).expand(-1, self.n_stems, -1) / self.n_stems


class SumOfStems(LinearOperator):
    r"""``y = x.sum(1, keepdim=True)``: ``(B, S, T) -> (B, 1, T)``, the MSDM mixing model.

    ``length=None`` accepts any ``T`` (the shape is then not fixed in advance and :meth:`svd` returns ``None``,
    since the SVD pieces need ``T``; :meth:`pinv` still works); with ``length`` the SVD pieces are available.
    """

    basis: Tensor
    is_channel_sum = True
    """Declares ``A(x) = x.sum(1, keepdim=True)`` (what MSDM's separation sampler requires)."""

    def __init__(self, n_stems: int, length: int | None = None) -> None:
        super().__init__()
        if int(n_stems) != n_stems or n_stems < 2:
            raise UserInputError(f"a mixture needs at least 2 stems, got n_stems={n_stems}.")
        if length is not None and (int(length) != length or length < 1):
            raise UserInputError(f"the stem length must be a positive integer or None, got {length}.")
        self.n_stems = int(n_stems)
        self.length = None if length is None else int(length)
        self.x_shape = None if self.length is None else (self.n_stems, self.length)
        self.register_buffer("basis", ones_complement_basis(self.n_stems), persistent=False)

    def _check_x(self, x: Tensor) -> None:
        t = "T" if self.length is None else str(self.length)
        if x.ndim != 3 or x.shape[1] != self.n_stems or (self.length is not None and x.shape[2] != self.length):
            raise UserInputError(f"SumOfStems expects stems of shape (B, {self.n_stems}, {t}), got {tuple(x.shape)}.")

    def _check_y(self, y: Tensor) -> None:
        t = "T" if self.length is None else str(self.length)
        if y.ndim != 3 or y.shape[1] != 1 or (self.length is not None and y.shape[2] != self.length):
            raise UserInputError(f"SumOfStems expects a mixture of shape (B, 1, {t}), got {tuple(y.shape)}.")

    def forward(self, x: Tensor) -> Tensor:
        self._check_x(x)
        return x.sum(1, keepdim=True)

    def adjoint(self, y: Tensor) -> Tensor:
        self._check_y(y)
        return y.expand(-1, self.n_stems, -1).clone()

    def svd(self) -> SumOfStemsSVD | None:
        if self.length is None:
            return None
        return SumOfStemsSVD(self.n_stems, self.length, self.basis)

    def pinv(self, y: Tensor) -> Tensor:
        """``y / S`` copied to every stem (any ``T``)."""
        self._check_y(y)
        return y.expand(-1, self.n_stems, -1) / self.n_stems


class StemImputation(LinearOperator):
    r"""Partial generation / imputation: some stems are given, the others are sampled.

    ``y = x[:, given]`` of shape ``(B, |given|, T)``. A selection: singular values 1, ``Vt(x)`` lists the given
    stems first, then the missing ones; ``pinv(y)`` puts ``y`` on the given stems and zeros elsewhere.
    """

    def __init__(self, n_stems: int, given: list[int] | tuple[int, ...], length: int | None = None) -> None:
        super().__init__()
        given = [int(g) for g in given]
        if not given or len(set(given)) != len(given) or not all(0 <= g < n_stems for g in given):
            raise UserInputError(f"given stems must be distinct indices in 0..{n_stems - 1}, got {given}.")
        if len(given) == n_stems:
            raise UserInputError("every stem is given: nothing is left to impute.")
        self.n_stems, self.length, self.given = int(n_stems), length, given
        self.missing = [i for i in range(n_stems) if i not in given]
        self.x_shape = None if length is None else (self.n_stems, int(length))

    def forward(self, x: Tensor) -> Tensor:
        return x[:, self.given]

    def adjoint(self, y: Tensor) -> Tensor:
        x = y.new_zeros(y.shape[0], self.n_stems, *y.shape[2:])
        x[:, self.given] = y
        return x

    def pinv(self, y: Tensor) -> Tensor:
        return self.adjoint(y)

    def svd(self) -> SVDPieces | None:
        return None if self.length is None else _SelectionSVD(self.n_stems, int(self.length), self.given, self.missing)


class _SelectionSVD(SVDPieces):
    def __init__(self, n_stems: int, length: int, given: list[int], missing: list[int]) -> None:
        self.n_stems, self.length, self.given, self.missing = n_stems, length, given, missing
        self.singulars = torch.ones(len(given) * length, dtype=torch.float64)

    @property
    def n(self) -> int:
        return self.n_stems * self.length

    def Vt(self, x: Tensor) -> Tensor:
        return torch.cat([x[:, self.given].reshape(x.shape[0], -1), x[:, self.missing].reshape(x.shape[0], -1)], 1)

    def V(self, c: Tensor) -> Tensor:
        r = len(self.given) * self.length
        x = c.new_zeros(c.shape[0], self.n_stems, self.length)
        x[:, self.given] = c[:, :r].reshape(c.shape[0], len(self.given), self.length)
        x[:, self.missing] = c[:, r:].reshape(c.shape[0], len(self.missing), self.length)
        return x

    def Ut(self, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], -1)

    def U(self, c: Tensor) -> Tensor:
        return c.reshape(c.shape[0], len(self.given), self.length)


Runs = tuple[tuple[int, int], ...]
"""``(start, length)`` of each run of consecutive samples of a mask, in order."""


def _runs(mask: Tensor) -> Runs:
    """``(start, length)`` of each run of ``True`` in a 1-D boolean mask, in order."""
    padded = torch.cat([torch.zeros(1, dtype=torch.int8), mask.to(torch.int8), torch.zeros(1, dtype=torch.int8)])
    edges = (padded[1:] - padded[:-1]).nonzero().flatten().tolist()
    return tuple((a, b - a) for a, b in zip(edges[::2], edges[1::2], strict=True))


def _gather(x: Tensor, runs: Runs) -> Tensor:
    """The samples of ``x`` (last axis) inside ``runs``, concatenated in order."""
    parts = [x.narrow(-1, a, n) for a, n in runs]
    return parts[0] if len(parts) == 1 else torch.cat(parts, -1) if parts else x[..., :0]


def _scatter(out: Tensor, runs: Runs, values: Tensor) -> None:
    """Write ``values`` (last axis: the run samples in order) into ``out`` at ``runs``."""
    offset = 0
    for a, n in runs:
        out.narrow(-1, a, n).copy_(values.narrow(-1, offset, n))
        offset += n


class MixtureInpainting(LinearOperator):
    r"""Time-domain inpainting of a gap in the mixture: ``y = (\sum_s x_s)[:, :, observed]``.

    ``observed`` is a boolean mask of length ``T`` (True where the mixture is known). Per observed sample the
    operator is the row of ones (singular value ``sqrt(S)``, as :class:`SumOfStems`); gap samples are unseen.
    ``Vt(x)``: the range coordinates of the observed samples, then their null-space coordinates, then every
    coordinate of the gap samples.
    """

    basis: Tensor

    def __init__(self, n_stems: int, observed: Tensor) -> None:
        super().__init__()
        observed = torch.as_tensor(observed, dtype=torch.bool).flatten()
        if n_stems < 2:
            raise UserInputError(f"a mixture needs at least 2 stems, got n_stems={n_stems}.")
        if not bool(observed.any()):
            raise UserInputError("the inpainting mask observes no sample of the mixture.")
        self.n_stems, self.length = int(n_stems), int(observed.numel())
        self.x_shape = (self.n_stems, self.length)
        self.register_buffer("observed", observed, persistent=False)
        self.observed_runs, self.gap_runs = _runs(observed), _runs(~observed)
        self.register_buffer("basis", ones_complement_basis(self.n_stems), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return _gather(x.sum(1, keepdim=True), self.observed_runs)

    def adjoint(self, y: Tensor) -> Tensor:
        x = y.new_zeros(y.shape[0], self.n_stems, self.length)
        _scatter(x, self.observed_runs, y.expand(-1, self.n_stems, -1))
        return x

    def svd(self) -> SVDPieces:
        return _InpaintingSVD(self.n_stems, self.length, self.observed_runs, self.gap_runs, self.basis)


class _InpaintingSVD(SVDPieces):
    def __init__(self, n_stems: int, length: int, observed_runs: Runs, gap_runs: Runs, basis: Tensor) -> None:
        self.n_stems, self.length, self._basis = n_stems, length, basis
        self.observed_runs, self.gap_runs = observed_runs, gap_runs
        self.n_obs = sum(n for _, n in observed_runs)
        self.singulars = torch.full((self.n_obs,), math.sqrt(n_stems), dtype=torch.float64)

    @property
    def n(self) -> int:
        return self.n_stems * self.length

    def Vt(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        coef = _gather(x, self.observed_runs).transpose(1, 2) @ self._basis.to(x)  # (B, n_obs, S)
        gap = _gather(x, self.gap_runs).reshape(b, -1)
        return torch.cat([coef[:, :, 0], coef[:, :, 1:].reshape(b, -1), gap], 1)

    def V(self, c: Tensor) -> Tensor:
        b, s, m = c.shape[0], self.n_stems, self.n_obs
        coef = torch.cat([c[:, :m, None], c[:, m : m * s].reshape(b, m, s - 1)], 2)
        x = c.new_empty(b, s, self.length)  # the two run sets cover every sample
        _scatter(x, self.observed_runs, (coef @ self._basis.T.to(c)).transpose(1, 2))
        _scatter(x, self.gap_runs, c[:, m * s :].reshape(b, s, self.length - m))
        return x

    def Ut(self, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], -1)

    def U(self, c: Tensor) -> Tensor:
        return c.reshape(c.shape[0], 1, self.n_obs)


class MixtureWithKnownStems(LinearOperator):
    r"""A chunk whose stems are already known on some samples (the neighbours' separated overlaps).

    ``known`` is a boolean mask of length ``T``. The observation is the flat vector
    ``y = [x[:, :, known] (stem-major), (\sum_s x_s)[:, 0, ~known]]`` of length ``S n_k + n_u``: where the stems
    are known they are observed one by one (which fixes the mixture there too), elsewhere only their sum.
    SVD pieces: singular value 1 for each known stem value, ``sqrt(S)`` for each mixture sample (as
    :class:`SumOfStems`); ``Vt(x)`` lists the known stem values, then the range and null-space coordinates of the
    unknown samples. :meth:`observe` builds ``y`` from a mixture chunk and the known stems.
    """

    basis: Tensor

    def __init__(self, n_stems: int, known: Tensor) -> None:
        super().__init__()
        known = torch.as_tensor(known, dtype=torch.bool).flatten()
        if n_stems < 2:
            raise UserInputError(f"a mixture needs at least 2 stems, got n_stems={n_stems}.")
        if bool(known.all()):
            raise UserInputError("every sample of the chunk is known: nothing is left to separate.")
        self.n_stems, self.length = int(n_stems), int(known.numel())
        self.x_shape = (self.n_stems, self.length)
        self.register_buffer("known", known, persistent=False)
        # the mask as runs of consecutive samples (the neighbours' overlaps are one run at each edge): slicing and
        # concatenating costs a copy, where boolean indexing searched the mask on every call (and index_select
        # gathered element by element, ~0.5 ms per 2 x 4 x 32768 batch on CPU)
        self.known_runs, self.unknown_runs = _runs(known), _runs(~known)
        self._n_known = int(known.sum())
        self.register_buffer("basis", ones_complement_basis(self.n_stems), persistent=False)

    @property
    def n_known(self) -> int:
        return self._n_known

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        return torch.cat([_gather(x, self.known_runs).reshape(b, -1), _gather(x, self.unknown_runs).sum(1)], 1)

    def adjoint(self, y: Tensor) -> Tensor:
        b, s, k = y.shape[0], self.n_stems, self.n_known
        x = y.new_empty(b, s, self.length)
        _scatter(x, self.known_runs, y[:, : s * k].reshape(b, s, k))
        _scatter(x, self.unknown_runs, y[:, s * k :, None].transpose(1, 2).expand(-1, s, -1))
        return x

    def observe(self, mixture: Tensor, known_stems: Tensor) -> Tensor:
        """``y`` for a mixture chunk ``(B, 1, T)`` and stems ``(B, S, T)`` that are valid where ``known``."""
        b = mixture.shape[0]
        return torch.cat(
            [_gather(known_stems, self.known_runs).reshape(b, -1), _gather(mixture, self.unknown_runs)[:, 0]], 1
        )

    def svd(self) -> SVDPieces:
        return _KnownStemsSVD(self.n_stems, self.length, self.known_runs, self.unknown_runs, self.basis)


class _KnownStemsSVD(SVDPieces):
    def __init__(self, n_stems: int, length: int, known_runs: Runs, unknown_runs: Runs, basis: Tensor) -> None:
        self.n_stems, self.length, self._basis = n_stems, length, basis
        self.known_runs, self.unknown_runs = known_runs, unknown_runs
        self.n_k = sum(n for _, n in known_runs)
        self.n_u = self.length - self.n_k
        ones = torch.ones(n_stems * self.n_k, dtype=torch.float64)
        self.singulars = torch.cat([ones, torch.full((self.n_u,), math.sqrt(n_stems), dtype=torch.float64)])

    @property
    def n(self) -> int:
        return self.n_stems * self.length

    def Vt(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        coef = _gather(x, self.unknown_runs).transpose(1, 2) @ self._basis.to(x)  # (B, n_u, S)
        return torch.cat([_gather(x, self.known_runs).reshape(b, -1), coef[:, :, 0], coef[:, :, 1:].reshape(b, -1)], 1)

    def V(self, c: Tensor) -> Tensor:
        b, s, k, u = c.shape[0], self.n_stems, self.n_k, self.n_u
        x = c.new_empty(b, s, self.length)  # the two run sets cover every sample
        _scatter(x, self.known_runs, c[:, : s * k].reshape(b, s, k))
        rest = c[:, s * k :]
        coef = torch.cat([rest[:, :u, None], rest[:, u:].reshape(b, u, s - 1)], 2)
        _scatter(x, self.unknown_runs, (coef @ self._basis.T.to(c)).transpose(1, 2))
        return x

    def Ut(self, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], -1)

    def U(self, c: Tensor) -> Tensor:
        return c
