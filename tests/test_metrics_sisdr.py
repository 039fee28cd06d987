"""SI-SDRi protocol (MSDM / MGDM Slakh2100 metric) and oracle baselines: closed forms and protocol edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from mgdm_audio.metrics import (
    ideal_binary_mask,
    ideal_ratio_mask,
    is_silent,
    mixture_baseline,
    si_sdri_windows,
    si_snr,
    windows,
)

EPS = 1e-8


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _orthogonal_pair(n: int, energy_o: float, energy_n: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    o = torch.randn(n, generator=g, dtype=torch.float64)
    noise = torch.randn(n, generator=g, dtype=torch.float64)
    noise = noise - (noise @ o) / (o @ o) * o
    o = o * math.sqrt(energy_o / float(o @ o))
    noise = noise * math.sqrt(energy_n / float(noise @ noise))
    return o, noise


def test_si_snr_perfect_estimate_is_bounded_by_eps():
    o = torch.linspace(-1.0, 1.0, 101, dtype=torch.float64)
    energy = float((o * o).sum())
    expected = 10.0 * math.log10((energy + EPS) / EPS)
    assert float(si_snr(o, o)) == pytest.approx(expected, rel=1e-12)
    assert expected > 90.0


def test_si_snr_orthogonal_noise_closed_form():
    o, noise = _orthogonal_pair(1000, 1e4, 1e2, seed=0)
    assert float(si_snr(o + noise, o)) == pytest.approx(10.0 * math.log10(100.0), abs=1e-9)
    # a scaled target: alpha = c, the ratio becomes c^2 E / E_n
    c = 0.5
    assert float(si_snr(c * o + noise, o)) == pytest.approx(10.0 * math.log10(c * c * 100.0), abs=1e-9)


def test_si_snr_scale_invariance_and_batching():
    g = _gen(1)
    ref = torch.randn(3, 2000, generator=g, dtype=torch.float64)
    est = ref + 0.3 * torch.randn(3, 2000, generator=g, dtype=torch.float64)
    base = si_snr(est, ref)
    assert base.shape == (3,)
    torch.testing.assert_close(si_snr(3.7 * est, ref), base, atol=1e-9, rtol=0)
    for i in range(3):
        assert float(si_snr(est[i], ref[i])) == float(base[i])
    # without eps the ratio only depends on the angle (symmetric); eps makes a zero reference asymmetric
    torch.testing.assert_close(si_snr(ref, 2.0 * est), si_snr(2.0 * est, ref), atol=1e-9, rtol=0)
    energy = float((ref[0] ** 2).sum())
    zero = torch.zeros(2000, dtype=torch.float64)
    assert float(si_snr(ref[0], zero)) == pytest.approx(10 * math.log10(EPS / (energy + EPS)), rel=1e-12)
    assert float(si_snr(zero, ref[0])) == pytest.approx(0.0, abs=1e-9)


def test_is_silent_threshold():
    n = 400  # ||a 1||_2 / n = a / 20, silent iff a < 3e-4
    assert bool(is_silent(torch.full((n,), 2.9e-4)))
    assert not bool(is_silent(torch.full((n,), 3.1e-4)))
    assert bool(is_silent(torch.zeros(n)))
    assert is_silent(torch.stack([torch.zeros(n), torch.ones(n)])).tolist() == [True, False]


def test_windows_protocol_chunk():
    w = windows(262144, 22050)
    assert w == [(0, 88200), (44100, 132300), (88200, 176400), (132300, 220500), (176400, 262144)]


def test_windows_edge_cases():
    assert windows(50000, 22050) == [(0, 50000)]  # overlap < N < window: one truncated window
    assert windows(44100, 22050) == []  # N <= overlap: nothing scored
    assert windows(88200, 22050) == [(0, 88200)]
    assert windows(88201, 22050) == [(0, 88200), (44100, 88201)]
    assert windows(10, 1, window_s=4.0, hop_s=4.0) == [(0, 4), (4, 8), (8, 10)]  # no overlap
    with pytest.raises(ValueError):
        windows(100, 10, window_s=2.0, hop_s=3.0)


def _three_stem_track(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """sr 100, 4 s / 2 s windows = 400 / 200 samples, T = 1200: windows [0,400) ... [800,1200).

    stem 0 active everywhere; stem 1 active on [0, 800); stem 2 zero on [0, 400), active on [400, 800).
    Window 0: stems 0, 1 active (stem 2 all-zero) -> kept. Windows 1-3 kept. Window 4: only stem 0 -> skipped.
    """
    g = _gen(seed)
    t = 1200
    ref = 0.1 * torch.randn(3, t, generator=g, dtype=torch.float64)
    ref[1, 800:] = 0.0
    ref[2, :400] = 0.0
    ref[2, 800:] = 0.0
    est = ref + 0.02 * torch.randn(3, t, generator=g, dtype=torch.float64)
    return est, ref


def test_silent_stem_variants_and_single_source_skip():
    est, ref = _three_stem_track()
    res = si_sdri_windows(est, ref, sample_rate=100)
    assert res.kept == [(0, 400), (200, 600), (400, 800), (600, 1000)]
    assert res.n_kept.tolist() == [4, 4, 4]
    assert res.n_kept_exclude_silent.tolist() == [4, 4, 3]
    assert res.active[:, 2].tolist() == [False, True, True, True]
    # per-window values by hand for stem 2
    mix = ref.sum(0)
    by_hand = [float(si_snr(est[2, a:b], ref[2, a:b]) - si_snr(mix[a:b], ref[2, a:b])) for a, b in res.kept]
    # all-zero reference: SI-SDRi = 10 log10((||mix||^2 + eps) / (||est||^2 + eps))
    zero_window = 10 * math.log10((float((mix[:400] ** 2).sum()) + EPS) / (float((est[2, :400] ** 2).sum()) + EPS))
    assert by_hand[0] == pytest.approx(zero_window, rel=1e-10)
    torch.testing.assert_close(res.per_window[:, 2], torch.tensor(by_hand, dtype=torch.float64), rtol=0, atol=1e-12)
    assert float(res.msdm[2]) == pytest.approx(sum(by_hand) / 4, rel=1e-12)
    assert float(res.exclude_silent[2]) == pytest.approx(sum(by_hand[1:]) / 3, rel=1e-12)
    assert float(res.msdm[2]) != pytest.approx(float(res.exclude_silent[2]), abs=1e-3)
    # stems without silent windows: the two variants agree
    torch.testing.assert_close(res.msdm[:2], res.exclude_silent[:2], rtol=0, atol=1e-12)
    # without the single-source filter the last window counts too
    res_all = si_sdri_windows(est, ref, sample_rate=100, filter_single_source=False)
    assert len(res_all.kept) == 5 and res_all.n_kept_exclude_silent.tolist() == [5, 4, 3]


def test_nan_when_no_window_kept():
    g = _gen(3)
    ref = torch.zeros(4, 1000, dtype=torch.float64)
    ref[1] = torch.randn(1000, generator=g, dtype=torch.float64)  # a single active stem: every window skipped
    res = si_sdri_windows(ref.clone(), ref, sample_rate=100)
    assert res.kept == [] and res.per_window.shape == (0, 4)
    assert torch.isnan(res.msdm).all() and torch.isnan(res.exclude_silent).all()
    assert res.n_kept.tolist() == [0, 0, 0, 0]
    # a stem silent in every kept window: msdm finite, exclude_silent NaN for that stem only
    ref[2] = torch.randn(1000, generator=g, dtype=torch.float64)
    est = ref + 0.01 * torch.randn(4, 1000, generator=g, dtype=torch.float64)
    res = si_sdri_windows(est, ref, sample_rate=100)
    assert torch.isfinite(res.msdm).all()
    assert torch.isnan(res.exclude_silent).tolist() == [True, False, False, True]
    # too short for any window
    res = si_sdri_windows(est[:, :150], ref[:, :150], sample_rate=100)
    assert torch.isnan(res.msdm).all()


def test_mixture_baseline_is_exactly_zero():
    est, ref = _three_stem_track(seed=4)
    floor = mixture_baseline(ref)
    assert floor.shape == ref.shape
    torch.testing.assert_close(floor[1], ref.sum(0), rtol=0, atol=0)
    res = si_sdri_windows(floor, ref, sample_rate=100)
    assert (res.per_window == 0.0).all()
    assert (res.msdm == 0.0).all() and (res.exclude_silent == 0.0).all()


def _two_tones(sr: int = 8000, t: int = 16384) -> torch.Tensor:
    time = torch.arange(t, dtype=torch.float64) / sr
    return torch.stack([0.5 * torch.sin(2 * math.pi * 220.0 * time), 0.4 * torch.sin(2 * math.pi * 2500.0 * time)])


@pytest.mark.parametrize("oracle", [ideal_ratio_mask, ideal_binary_mask])
def test_oracle_masks_separate_tones_and_sum_to_mixture(oracle):
    ref = _two_tones()
    est = oracle(ref)
    assert est.shape == ref.shape and est.dtype == ref.dtype
    torch.testing.assert_close(est.sum(0), ref.sum(0), rtol=0, atol=1e-9)
    improvement = si_snr(est, ref) - si_snr(ref.sum(0).expand_as(ref), ref)
    assert (improvement > 10.0).all(), improvement
    res = si_sdri_windows(est, ref, sample_rate=2000)
    assert len(res.kept) == 4 and (res.msdm > 10.0).all()


def test_oracle_masks_with_a_silent_stem():
    g = _gen(5)
    ref = torch.zeros(3, 4096, dtype=torch.float64)
    ref[0] = torch.randn(4096, generator=g, dtype=torch.float64)
    for oracle in (ideal_ratio_mask, ideal_binary_mask):
        est = oracle(ref, n_fft=512, hop=128)
        assert torch.isfinite(est).all()
        torch.testing.assert_close(est[0], ref[0], rtol=0, atol=1e-9)
        assert est[1:].abs().max() < 1e-12
    # float32 input: float32 output
    assert ideal_ratio_mask(ref.float(), n_fft=512, hop=128).dtype == torch.float32
