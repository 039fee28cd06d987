"""The noise prefetch of ``mgdm_audio.core.rng``: the same numbers as serial draws, in every order of use."""

from __future__ import annotations

import pytest
import torch

import mgdm_audio.core.rng as rng
from mgdm_audio.audio.separator import Separator
from tests.audio_priors_for_tests import BandPrior, band_stems


@pytest.fixture
def small_prefetch(monkeypatch):
    """Prefetch on for every size (the toy prior's chunks are below the production threshold)."""
    monkeypatch.setenv("MGDM_AUDIO_NOISE_PREFETCH", "1")
    monkeypatch.setattr(rng, "PREFETCH_MIN_NUMEL", 1)


def _script(draw, g: torch.Generator) -> list[torch.Tensor]:
    """A mixed sequence: repeated shapes (prefetch hits), a shape change, a foreign draw from the generator
    (randint, as MGDM's tau), float64, and prefetches started at different points."""
    x32, y32, x64 = torch.empty(3, 5, 7), torch.empty(2, 11), torch.empty(3, 5, 7, dtype=torch.float64)
    out = [draw(x32, g)]
    rng.start_prefetch()
    out += [draw(x32, g), draw(x32, g)]  # one started, one not
    rng.start_prefetch()
    out.append(torch.randint(0, 1000, (4,), generator=g).float())  # moves the generator under a started prefetch
    out.append(draw(x32, g))
    rng.start_prefetch()
    out += [draw(y32, g), draw(x64, g)]  # shape and dtype changes
    rng.start_prefetch()
    out += [draw(x64, g), draw(x64, g)]
    rng.start_prefetch()
    return out


def test_prefetched_stream_equals_serial_draws(small_prefetch):
    serial = _script(lambda x, g: torch.randn(x.shape, generator=g, dtype=x.dtype), rng.make_generator(7))
    g = rng.make_generator(7)
    prefetched = _script(rng.randn_like, g)
    assert all(torch.equal(a, b) for a, b in zip(serial, prefetched, strict=True))
    ref = rng.make_generator(7)
    _script(lambda x, g: torch.randn(x.shape, generator=g, dtype=x.dtype), ref)
    assert torch.equal(g.get_state(), ref.get_state())  # the generator ends where serial drawing leaves it
    assert rng._executor is not None  # the background path did run


def test_separation_is_bit_identical_with_and_without_prefetch(small_prefetch, monkeypatch):
    prior = BandPrior(sample_rate=8000, chunk_samples=1024)
    mix = band_stems(2500, 8000, seed=5).sum(0)
    with_prefetch = Separator(prior, sampler="mgdm", preset="fast", seed=1).separate_tensor(mix, 8000).stems
    monkeypatch.setenv("MGDM_AUDIO_NOISE_PREFETCH", "0")
    serial = Separator(prior, sampler="mgdm", preset="fast", seed=1).separate_tensor(mix, 8000).stems
    assert torch.equal(with_prefetch, serial)
