"""PSNR / SSIM / LPIPS of the image benchmark: hand values, scikit-image agreement, batching, offline-only LPIPS."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mgdm_audio.metrics import image as image_metrics
from mgdm_audio.metrics.image import lpips, lpips_available, psnr, ssim, ssim_map, to_unit_range


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _smooth_images(shape: tuple[int, int, int, int], seed: int, blur_sigma: float = 2.0) -> torch.Tensor:
    """Gaussian noise blurred per channel (reflect padding), scaled into [-0.9, 0.9]: float64 (B, C, H, W)."""
    noise = torch.randn(shape, generator=_gen(seed), dtype=torch.float64)
    taps = torch.arange(-6, 7, dtype=torch.float64)
    kernel = torch.exp(-(taps**2) / (2 * blur_sigma**2))
    kernel = kernel / kernel.sum()
    channels = shape[1]
    weight = torch.outer(kernel, kernel).expand(channels, 1, 13, 13)
    blurred = F.conv2d(F.pad(noise, (6, 6, 6, 6), mode="reflect"), weight, groups=channels)
    return 0.9 * blurred / blurred.abs().amax()


def _noisy_pair(shape: tuple[int, int, int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    reference = _smooth_images(shape, seed)
    white = 0.05 * torch.randn(shape, generator=_gen(seed + 100), dtype=torch.float64)
    estimate = (reference + 0.3 * _smooth_images(shape, seed + 1) + white).clamp(-1, 1)
    return estimate, reference


def test_to_unit_range_maps_and_clamps() -> None:
    x = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 2.0])
    assert torch.equal(to_unit_range(x), torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))


def test_psnr_hand_values() -> None:
    # an offset of 0.1 on [0, 1] (0.2 on [-1, 1]) everywhere: MSE = 0.01, PSNR = 10 log10(100) = 20 dB
    reference = torch.linspace(-0.8, 0.6, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    assert torch.allclose(psnr(reference + 0.2, reference), torch.full((2,), 20.0, dtype=torch.float64), atol=1e-9)
    # half the pixels off by 0.5 on [0, 1] (1.0 on [-1, 1], no clamping as the reference is <= -0.1):
    # MSE = 0.125, PSNR = 10 log10(8) = 9.0309 dB
    low = torch.linspace(-0.9, -0.1, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    shifted = low.clone()
    shifted[:, :, :4] += 1.0
    assert torch.allclose(psnr(shifted, low), torch.full((2,), 10 * math.log10(8.0), dtype=torch.float64))
    # values outside [-1, 1] are clamped first: an estimate of 3 against 1 is a perfect match
    assert math.isinf(float(psnr(torch.full((1, 1, 4, 4), 3.0), torch.ones(1, 1, 4, 4))[0]))


def test_identical_images_give_infinite_psnr_and_ssim_one() -> None:
    x = _smooth_images((3, 3, 24, 24), seed=1)
    assert bool(torch.isinf(psnr(x, x)).all()) and bool((psnr(x, x) > 0).all())
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ssim_map(x, x), torch.ones(3, 3, 24, 24, dtype=torch.float64), atol=1e-12)


def test_ssim_symmetric_and_below_one_for_noise() -> None:
    estimate, reference = _noisy_pair((4, 3, 32, 32), seed=2)
    forward, backward = ssim(estimate, reference), ssim(reference, estimate)
    assert torch.allclose(forward, backward, atol=1e-12)
    assert bool((forward < 0.99).all()) and bool((forward > 0.0).all())
    # more noise -> lower SSIM and lower PSNR, image by image
    noisier = (reference + 0.5 * torch.randn(reference.shape, generator=_gen(7), dtype=torch.float64)).clamp(-1, 1)
    assert bool((ssim(noisier, reference) < forward).all())
    assert bool((psnr(noisier, reference) < psnr(estimate, reference)).all())


def test_ssim_window_and_constants_by_hand() -> None:
    # two constant images a, b on [0, 1]: every local variance is 0, so away from the zero-padded border
    # SSIM = (2ab + C1) / (a^2 + b^2 + C1) exactly
    a, b = 0.25, 0.75
    estimate = torch.full((1, 1, 23, 23), 2 * a - 1)
    reference = torch.full((1, 1, 23, 23), 2 * b - 1)
    c1 = 0.01**2
    centre = ssim_map(estimate, reference)[0, 0, 5:-5, 5:-5]
    assert torch.allclose(centre, torch.full_like(centre, (2 * a * b + c1) / (a * a + b * b + c1)), atol=1e-12)
    # the window is an 11 x 11 Gaussian (sigma 1.5) summing to 1: blur of a unit impulse at the centre
    window = image_metrics._gaussian_window(11, 1.5, torch.float64, torch.device("cpu"))
    assert window.shape == (11, 11) and abs(float(window.sum()) - 1.0) < 1e-12
    g = torch.exp(-torch.tensor([25.0, 0.0]) / (2 * 1.5**2))
    assert abs(float(window[5, 0] / window[5, 5]) - float(g[0] / g[1])) < 1e-9


def test_ssim_matches_skimage_on_the_interior() -> None:
    skimage_metrics = pytest.importorskip("skimage.metrics")
    estimate, reference = _noisy_pair((3, 3, 48, 48), seed=3)
    ours_map = ssim_map(estimate, reference)
    ours_full = ssim(estimate, reference)
    for b in range(3):
        theirs = skimage_metrics.structural_similarity(
            to_unit_range(estimate[b]).numpy(),
            to_unit_range(reference[b]).numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=0,
        )
        # scikit-image pads by reflection but crops (win_size - 1) // 2 = 5 border pixels before the mean, and its
        # Gaussian filter (truncate 3.5 -> radius 5) is our 11 x 11 window: the interiors agree to float precision
        interior = float(ours_map[b, :, 5:-5, 5:-5].mean())
        assert abs(interior - theirs) < 1e-10
        # with the border (29 % of a 48 x 48 image's pixels, zero padded here) the mean moves by ~0.03 (measured
        # 0.032 at 48 x 48, 0.021 at 96 x 96): zero padding on both images makes the border look alike
        assert 0.0 < float(ours_full[b]) - theirs < 0.05


def test_batch_equals_per_image() -> None:
    estimate, reference = _noisy_pair((3, 2, 20, 28), seed=4)
    batched_psnr, batched_ssim = psnr(estimate, reference), ssim(estimate, reference)
    assert batched_psnr.shape == batched_ssim.shape == (3,)
    for b in range(3):
        assert torch.allclose(batched_psnr[b : b + 1], psnr(estimate[b : b + 1], reference[b : b + 1]), atol=1e-12)
        assert torch.allclose(batched_ssim[b : b + 1], ssim(estimate[b : b + 1], reference[b : b + 1]), atol=1e-12)
    # float32 inputs are scored in float64 with the same result
    assert torch.allclose(ssim(estimate.float(), reference.float()), batched_ssim, atol=1e-6)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        ssim(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))


def test_lpips_unavailable_without_local_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    assert image_metrics.alexnet_checkpoint_path().is_relative_to(tmp_path)
    x = torch.zeros(1, 3, 16, 16)
    assert lpips_available() is False
    assert lpips(x, x) is None
    assert not (tmp_path / "torch_home").exists()  # nothing was downloaded or created
    # with a checkpoint file present but the lpips package missing it stays unavailable
    checkpoint = image_metrics.alexnet_checkpoint_path()
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "lpips", None)  # find_spec("lpips") -> None, as for an uninstalled package
    assert lpips_available() is False
    assert lpips(x, x) is None


def test_lpips_runs_from_a_local_alexnet_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lpips")
    torchvision = pytest.importorskip("torchvision")
    assert torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url.endswith("/" + image_metrics.ALEXNET_CHECKPOINT)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    # a stand-in AlexNet checkpoint: seeded random conv features; the unused classifier stored as zero-stride views
    # (a few bytes each) so the file stays ~10 MB. Real weights give other values; the plumbing is what is tested.
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = torchvision.models.alexnet(weights=None).state_dict()
    small = {k: v if k.startswith("features") else torch.zeros(1).expand(v.shape) for k, v in state.items()}
    checkpoint = image_metrics.alexnet_checkpoint_path()
    checkpoint.parent.mkdir(parents=True)
    torch.save(small, checkpoint)
    assert lpips_available() is True
    estimate, reference = _noisy_pair((3, 3, 32, 32), seed=5)
    distance = lpips(estimate.float(), reference.float())
    assert distance is not None and distance.shape == (3,)
    assert bool((distance > 0).all()) and bool(torch.isfinite(distance).all())
    same = lpips(reference.float(), reference.float())
    assert same is not None and torch.allclose(same, torch.zeros(3), atol=1e-7)
    single = lpips(estimate[1:2].float(), reference[1:2].float())
    assert single is not None and torch.allclose(single, distance[1:2], rtol=1e-4, atol=1e-6)
    assert np.isclose(float(lpips(reference.float(), estimate.float())[0]), float(distance[0]), rtol=1e-4)
