"""The streaming engine: exact joins, neighbour conditioning alignment, lengths, bounded buffers."""

import pytest
import torch

from mgdm_audio.audio.streaming import ChunkPlan, separate_stream
from mgdm_audio.core.errors import UserInputError

GAINS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float32)


def _blocks(x, size):
    return [x[i : i + size] for i in range(0, x.numel(), size)]


class GainSeparator:
    """Stem s = g_s * mixture: any correct join of the chunks reproduces it exactly. Records what it saw."""

    def __init__(self, k=1):
        self.k = k
        self.calls = []

    def __call__(self, mix, known, mask):
        self.calls.append((mix.clone(), None if known is None else known.clone(), mask))
        est = GAINS[None, :, None] * mix  # (n, S, T)
        return est[:, None].expand(-1, self.k, -1, -1).clone()


@pytest.mark.parametrize("length", [1, 37, 100, 101, 250, 999])
@pytest.mark.parametrize("batch", [1, 3])
def test_joins_are_exact_and_lengths_kept(length, batch):
    g = torch.Generator().manual_seed(length)
    x = torch.randn(length, generator=g)
    plan = ChunkPlan(40, 10)
    sep = GainSeparator(k=2)
    out = torch.cat(list(separate_stream(_blocks(x, 17), sep, plan, 3, batch_chunks=batch, consistent=False)), -1)
    assert out.shape == (2, 3, length)
    assert torch.allclose(out, GAINS[None, :, None] * x, atol=1e-6)
    n_chunks = sum(c[0].shape[0] for c in sep.calls)
    assert n_chunks == plan.n_chunks(length)


def test_odd_chunks_see_their_neighbours_overlaps():
    x = torch.randn(300, generator=torch.Generator().manual_seed(1))
    plan = ChunkPlan(40, 10)
    sep = GainSeparator()
    list(separate_stream(_blocks(x, 64), sep, plan, 3, batch_chunks=2))
    odd_calls = [c for c in sep.calls if c[1] is not None]
    assert odd_calls
    for mix, known, mask in odd_calls:
        assert mask.sum() == 20 and mask[:10].all() and mask[-10:].all()
        expected = GAINS[None, :, None] * mix  # what the evens produced on the same samples
        assert torch.allclose(known[:, 0][..., mask], expected[..., mask], atol=1e-6)


def test_consistency_projection_and_crossfade_of_disagreeing_chunks():
    """Chunks that disagree (a constant offset per chunk) are joined without jumps, and stems sum to the mix."""
    x = torch.randn(500, generator=torch.Generator().manual_seed(2))
    counter = iter(range(1000))

    def offset_sep(mix, known, mask):
        est = GAINS[None, :, None] * mix + 0.0
        est = est + torch.tensor([float(next(counter)) for _ in range(mix.shape[0])])[:, None, None] * 0.01
        return est[:, None]

    plan = ChunkPlan(60, 15)
    out = torch.cat(list(separate_stream(_blocks(x, 50), offset_sep, plan, 3, batch_chunks=2)), -1)[0]
    assert torch.allclose(out.sum(0), x, atol=1e-5)
    resid = out - GAINS[:, None] * x
    # the offsets change smoothly: no step larger than the largest per-sample fade increment
    assert float(resid.diff(dim=-1).abs().max()) < 0.01 * 10 * 3.2 / 15


def test_buffer_is_bounded():
    """The engine never holds more mixture than one round of chunks, whatever the input length."""
    plan = ChunkPlan(64, 16)
    peaks = []
    for length in (2_000, 20_000):
        x = torch.randn(length, generator=torch.Generator().manual_seed(3))

        def sep(mix, known, mask):
            return (GAINS[None, :, None] * mix)[:, None]

        gen = separate_stream(_blocks(x, 32), sep, plan, 3, batch_chunks=2)
        held = []
        for _ in gen:
            held.append(gen.gi_frame.f_locals["mix"].data.numel())
        peaks.append(max(held))
    assert peaks[0] == peaks[1] and peaks[1] < 6 * 64


def test_plan_validation():
    with pytest.raises(UserInputError, match="overlap"):
        ChunkPlan(40, 20)
    with pytest.raises(UserInputError, match="overlap"):
        ChunkPlan.from_fraction(40, 0.0)
    assert ChunkPlan(40, 10).n_chunks(40) == 1 and ChunkPlan(40, 10).n_chunks(41) == 3
    w = ChunkPlan(40, 10).odd_weight()
    ramp = w[:10]
    assert torch.allclose(ramp + ramp.flip(0), torch.ones(10, dtype=torch.float64))
