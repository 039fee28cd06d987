r"""Image restoration scores of the MGDM benchmark: PSNR, SSIM and (when available offline) LPIPS.

Inputs are batches ``(B, C, H, W)`` in ``[-1, 1]`` (the project's image convention); every score is returned
per image, a tensor ``(B,)``. PSNR and SSIM are computed on ``[0, 1]`` images
``u = clamp((x + 1) / 2, 0, 1)`` (:func:`to_unit_range`), in float64, as the MGDM reference code does
(``src/utils/metrics.py`` of the public repository Badr-MOUFAD/mgdm):

* PSNR with peak 1: :math:`\mathrm{PSNR} = 10 \log_{10}(1 / \mathrm{MSE})`, the MSE over ``C, H, W`` of one
  image; identical images give ``+inf``.
* SSIM with an ``11 x 11`` Gaussian window ``w`` (``sigma = 1.5``, sums to 1), applied per channel as a
  zero-padded convolution (padding 5, so the map keeps the image size), ``C1 = 0.01^2``, ``C2 = 0.03^2``:

  .. math:: \mu_x = w * x, \quad \sigma_x^2 = w * x^2 - \mu_x^2, \quad \sigma_{xy} = w * (xy) - \mu_x \mu_y,

  .. math:: \mathrm{SSIM} = \mathrm{mean}_{c,h,w}
            \frac{(2 \mu_x \mu_y + C_1)(2 \sigma_{xy} + C_2)}{(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)}.

  Near the border the zero padding lowers the local means; scikit-image's ``structural_similarity`` (reflect
  padding, border of 5 pixels cropped before the mean) agrees with :func:`ssim_map` on the interior
  ``[5:-5, 5:-5]`` to float precision.
* LPIPS (AlexNet, version 0.1, inputs in ``[-1, 1]``, on CPU) through the ``lpips`` package, used only when the
  package, torchvision, its linear-layer weights and torchvision's AlexNet checkpoint are all present on disk
  (``<torch hub dir>/checkpoints/alexnet-owt-7be5be79.pth``). Nothing is ever downloaded: without them
  :func:`lpips` returns ``None`` and :func:`lpips_available` is ``False``.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ALEXNET_CHECKPOINT",
    "SSIM_C1",
    "SSIM_C2",
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "alexnet_checkpoint_path",
    "lpips",
    "lpips_available",
    "psnr",
    "ssim",
    "ssim_map",
    "to_unit_range",
]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
#: torchvision's file name for ``AlexNet_Weights.IMAGENET1K_V1`` in the torch hub cache (what lpips loads)
ALEXNET_CHECKPOINT = "alexnet-owt-7be5be79.pth"


def _check_pair(estimate: Tensor, reference: Tensor) -> None:
    if estimate.ndim != 4 or estimate.shape != reference.shape:
        raise ValueError(
            f"estimate and reference must be batches (B, C, H, W) of one shape, got {tuple(estimate.shape)} "
            f"and {tuple(reference.shape)}."
        )


def to_unit_range(x: Tensor) -> Tensor:
    """Map ``[-1, 1]`` images to ``[0, 1]``: ``clamp((x + 1) / 2, 0, 1)``."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def psnr(estimate: Tensor, reference: Tensor) -> Tensor:
    """PSNR in dB per image, peak 1 on the ``[0, 1]`` images: ``10 log10(1 / MSE)``; ``(B,)`` float64."""
    _check_pair(estimate, reference)
    diff = to_unit_range(estimate.double()) - to_unit_range(reference.double())
    mse = diff.pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The ``size x size`` window ``g g^T`` with ``g_i ∝ exp(-(i - size//2)^2 / (2 sigma^2))``, ``sum g = 1``."""
    offsets = torch.arange(size, dtype=dtype, device=device) - (size // 2)
    g = torch.exp(-(offsets**2) / (2.0 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim_map(estimate: Tensor, reference: Tensor) -> Tensor:
    """The local SSIM map ``(B, C, H, W)`` (float64) of ``[-1, 1]`` images; :func:`ssim` is its per-image mean."""
    _check_pair(estimate, reference)
    x = to_unit_range(estimate.double())
    y = to_unit_range(reference.double())
    channels = x.shape[1]
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, x.dtype, x.device)
    weight = window.expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)
    pad = SSIM_WINDOW // 2

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, weight, padding=pad, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y
    numerator = (2.0 * mu_x * mu_y + SSIM_C1) * (2.0 * cov_xy + SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return numerator / denominator


def ssim(estimate: Tensor, reference: Tensor) -> Tensor:
    """SSIM per image ``(B,)`` (float64): the mean of :func:`ssim_map` over channels and pixels."""
    return ssim_map(estimate, reference).flatten(1).mean(1)


# ---------------------------------------------------------------- LPIPS (optional, offline only)
def alexnet_checkpoint_path() -> Path:
    """Where torchvision (and so lpips) looks for the AlexNet weights: ``<torch.hub.get_dir()>/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_CHECKPOINT


def _lpips_linear_weights() -> Path | None:
    """The lpips package's own AlexNet linear-layer weights (``lpips/weights/v0.1/alex.pth``), or None."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth"
    return path if path.is_file() else None


def lpips_available() -> bool:
    """True iff LPIPS can run without any download: lpips + torchvision installed and both weight files on disk."""
    if importlib.util.find_spec("torchvision") is None or _lpips_linear_weights() is None:
        return False
    return alexnet_checkpoint_path().is_file()


@functools.lru_cache(maxsize=2)
def _lpips_model(checkpoint: str) -> torch.nn.Module:
    """The LPIPS(AlexNet) module on CPU; ``checkpoint`` (the AlexNet file, checked to exist) keys the cache."""
    import lpips as lpips_package  # noqa: PLC0415 (optional dependency)

    # torchvision loads ``checkpoint`` from the hub cache because the file exists; it downloads only when absent.
    # lpips 0.1.4 still calls ``alexnet(pretrained=True)``: silence torchvision's deprecation notices about that.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips_package.LPIPS(net="alex", version="0.1", verbose=False)
    return model.eval().requires_grad_(False)


def lpips(estimate: Tensor, reference: Tensor) -> Tensor | None:
    """LPIPS(AlexNet) distance per image ``(B,)`` of ``[-1, 1]`` images, or None when :func:`lpips_available` is not.

    Computed on CPU in float32 (as the MGDM reference does); the result is moved to ``estimate``'s device.
    """
    _check_pair(estimate, reference)
    if not lpips_available():
        return None
    model = _lpips_model(str(alexnet_checkpoint_path()))
    with torch.no_grad():
        distance = model(estimate.detach().float().cpu(), reference.detach().float().cpu())
    return distance.reshape(estimate.shape[0]).to(estimate.device)
