r"""The bkse KernelWizard blur network, so that its published weights can drive ``nonlinear_blur``.

The MGDM reference's non-linear deblurring task (``src/nonlinear_blurring/`` of Badr-MOUFAD/mgdm) blurs with the kernel
adapter ``G`` of "Explore Image Deblurring via Encoded Blur Kernel Space" (Tran et al., CVPR 2021,
repository ``VinAIResearch/blur-kernel-space-exploring``, weights ``GOPRO_wVAE.pth``):

.. math:: y = \mathrm{clamp}\big(2\,G\big(\tfrac{x + 1}{2}, k\big) - 1,\ -1,\ 1\big),\qquad
          k = 1.2\,\varepsilon,\ \varepsilon \sim \mathcal N(0, I_{512 \times H/128 \times W/128}),

where ``G(u, k) = u + R(U(E(u), k))``: a feature extractor ``E`` (two stride-2 convolutions and
``front_RBs`` residual blocks, so features are at ``H/4``), a five-level skip U-Net ``U`` whose
bottleneck (at ``H/128``) concatenates the kernel code ``k``, and a reconstruction trunk ``R``
(``back_RBs`` residual blocks and two pixel shuffles back to ``H``). The weights cannot be downloaded
here, so nothing is shipped: :func:`load_kernel_wizard` loads a user's file and the default
``nonlinear_blur`` stays the documented stand-in :class:`~mgdm_audio.image.operators.NonlinearBlur`.

Module names follow the published checkpoint so its state dict loads key for key. The kernel
*encoder* ``F`` (``kernel_extractor.*``, about 75M parameters) is not needed to blur and its keys are
skipped. This file is written for this project from the paper's description and the published
architecture; no code was copied.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.operators import Operator
from mgdm_audio.training.export import state_dict_mismatch

__all__ = [
    "KernelWizardBlur",
    "KernelWizardConfig",
    "KernelWizardGenerator",
    "infer_kernel_wizard_config",
    "load_kernel_wizard",
]

#: Prefix of the kernel-encoder weights in published checkpoints; not used for blurring.
ENCODER_PREFIX = "kernel_extractor."
#: Spatial reduction from the image to the kernel code: 4 (feature extractor) x 2**5 (U-Net).
KERNEL_STRIDE = 128


@dataclass(frozen=True)
class KernelWizardConfig:
    """Sizes of the blur generator; the defaults are the published ``GOPRO_wVAE`` configuration."""

    input_nc: int = 3
    nf: int = 64
    front_RBs: int = 10
    back_RBs: int = 20

    @property
    def kernel_channels(self) -> int:
        """Channels of the kernel code ``k`` (``8 nf``, 512 for the published weights)."""
        return 8 * self.nf


class _ResidualBlock(nn.Module):
    """``x + conv2(relu(conv1(x)))``, 3x3 convolutions with bias, no normalisation."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class _SkipLevel(nn.Module):
    r"""One level of the kernel-conditioned U-Net ``U``.

    ``down`` halves the resolution (4x4 convolution, stride 2), ``up`` doubles it (transposed 4x4
    convolution). Inner levels return ``cat(up(inner(down(x))), x)``; the innermost level's ``inner``
    is ``cat(., k)`` with the kernel code; the outermost level has no skip and ends in ``tanh``.
    The published U-Net has no normalisation (``norm: none``), which leaves ``nn.Identity`` slots in
    the layer lists; they are kept so that layer indices (and so checkpoint keys) match.
    """

    def __init__(
        self,
        outer: int,
        inner: int,
        submodule: _SkipLevel | None,
        *,
        outermost: bool = False,
        innermost: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        self.innermost = innermost
        down_conv = nn.Conv2d(outer, inner, kernel_size=4, stride=2, padding=1, bias=False)
        up_conv = nn.ConvTranspose2d(2 * inner, outer, kernel_size=4, stride=2, padding=1, bias=outermost)
        if outermost:
            self.down = nn.Sequential(down_conv)
            self.up = nn.Sequential(nn.ReLU(), up_conv, nn.Tanh())
        elif innermost:
            self.down = nn.Sequential(nn.LeakyReLU(0.2), down_conv)
            self.up = nn.Sequential(nn.ReLU(), up_conv, nn.Identity())
        else:
            self.down = nn.Sequential(nn.LeakyReLU(0.2), down_conv, nn.Identity())
            self.up = nn.Sequential(nn.ReLU(), up_conv, nn.Identity())
        if submodule is not None:
            self.submodule = submodule

    def forward(self, x: Tensor, kernel: Tensor) -> Tensor:
        h = self.down(x)
        h = torch.cat((h, kernel), dim=1) if self.innermost else self.submodule(h, kernel)
        h = self.up(h)
        return h if self.outermost else torch.cat((h, x), dim=1)


class _KernelAdapter(nn.Module):
    """The U-Net ``U`` of the adapter: channels ``nf -> nf -> 2nf -> 4nf -> 8nf -> 8nf``."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        level = _SkipLevel(8 * nf, 8 * nf, None, innermost=True)
        level = _SkipLevel(4 * nf, 8 * nf, level)
        level = _SkipLevel(2 * nf, 4 * nf, level)
        level = _SkipLevel(nf, 2 * nf, level)
        self.model = _SkipLevel(nf, nf, level, outermost=True)

    def forward(self, features: Tensor, kernel: Tensor) -> Tensor:
        return self.model(features, kernel)


class KernelWizardGenerator(nn.Module):
    r"""The blur generator ``G(u, k) = u + R(U(E(u), k))`` of bkse, for ``u`` in ``[0, 1]``.

    ``u`` is ``(B, input_nc, H, W)`` with ``H`` and ``W`` multiples of 128; ``k`` is
    ``(B or 1, 8 nf, H/128, W/128)``.
    """

    def __init__(self, config: KernelWizardConfig = KernelWizardConfig()) -> None:
        super().__init__()
        self.config = config
        nf = config.nf
        lrelu = nn.LeakyReLU(0.1)
        self.feature_extractor = nn.Sequential(
            nn.Conv2d(config.input_nc, nf, 3, 1, 1, bias=True),
            lrelu,
            nn.Conv2d(nf, nf, 3, 2, 1, bias=True),
            lrelu,
            nn.Conv2d(nf, nf, 3, 2, 1, bias=True),
            lrelu,
            *[_ResidualBlock(nf) for _ in range(config.front_RBs)],
        )
        self.adapter = _KernelAdapter(nf)
        self.recon_trunk = nn.Sequential(
            *[_ResidualBlock(nf) for _ in range(config.back_RBs)],
            nn.Conv2d(nf, 4 * nf, 3, 1, 1, bias=True),
            nn.PixelShuffle(2),
            lrelu,
            nn.Conv2d(nf, 64 * 4, 3, 1, 1, bias=True),
            nn.PixelShuffle(2),
            lrelu,
            nn.Conv2d(64, 64, 3, 1, 1, bias=True),
            lrelu,
            nn.Conv2d(64, config.input_nc, 3, 1, 1, bias=True),
        )

    def kernel_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape ``(8 nf, H/128, W/128)`` of one kernel code for an ``H x W`` image."""
        if height % KERNEL_STRIDE or width % KERNEL_STRIDE:
            raise UserInputError(
                f"the KernelWizard blur needs image sides that are multiples of {KERNEL_STRIDE}, got {height}x{width}."
            )
        return (self.config.kernel_channels, height // KERNEL_STRIDE, width // KERNEL_STRIDE)

    def forward(self, u: Tensor, kernel: Tensor) -> Tensor:
        expected = self.kernel_shape(u.shape[-2], u.shape[-1])
        if tuple(kernel.shape[1:]) != expected or kernel.shape[0] not in (1, u.shape[0]):
            raise UserInputError(
                f"kernel code must have shape (1 or {u.shape[0]}, {expected}), got {tuple(kernel.shape)}."
            )
        kernel = kernel.expand(u.shape[0], *expected)
        return u + self.recon_trunk(self.adapter(self.feature_extractor(u), kernel))


# --------------------------------------------------------------------------------------------------
# Loading published or user-trained weights
# --------------------------------------------------------------------------------------------------

_RESBLOCK_KEY = re.compile(r"^(feature_extractor|recon_trunk)\.(\d+)\.conv1\.weight$")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or of a ``.pth``/``.pt`` state dict, never unpickling code.

    ``.pth`` files are read with ``torch.load(weights_only=True)``, which only rebuilds tensors and
    plain containers. A ``{"state_dict": ...}`` or ``{"params": ...}`` wrapper and a DataParallel
    ``module.`` prefix are removed.
    """
    if not path.is_file():
        raise UserInputError(f"KernelWizard weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: object = load_file(str(path), device="cpu")
        else:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise UserInputError(f"cannot read KernelWizard weights {path}: {exc}") from exc
    for wrapper in ("state_dict", "params"):
        if isinstance(raw, dict) and isinstance(raw.get(wrapper), dict):
            raw = raw[wrapper]
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise UserInputError(f"{path} is not a state dict of tensors.")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in raw.items()}


def infer_kernel_wizard_config(state: dict[str, Tensor]) -> KernelWizardConfig:
    """The :class:`KernelWizardConfig` a state dict was saved from (channels and block counts)."""
    try:
        first = state["feature_extractor.0.weight"]
    except KeyError:
        raise UserInputError("not KernelWizard weights: no 'feature_extractor.0.weight' tensor.") from None
    counts = {"feature_extractor": 0, "recon_trunk": 0}
    for key in state:
        match = _RESBLOCK_KEY.match(key)
        if match:
            counts[match.group(1)] += 1
    return KernelWizardConfig(
        input_nc=int(first.shape[1]),
        nf=int(first.shape[0]),
        front_RBs=counts["feature_extractor"],
        back_RBs=counts["recon_trunk"],
    )


def load_kernel_wizard(path: str | Path) -> KernelWizardGenerator:
    """A frozen :class:`KernelWizardGenerator` with the weights of ``path`` (e.g. ``GOPRO_wVAE.pth``).

    Every generator tensor must be present with its shape (strict); the encoder's
    ``kernel_extractor.*`` tensors are ignored; anything else is an error.
    """
    path = Path(path)
    state = _read_state_dict(path)
    config = infer_kernel_wizard_config(state)
    generator = KernelWizardGenerator(config)
    blur_state = {k: v for k, v in state.items() if not k.startswith(ENCODER_PREFIX)}
    expected = generator.state_dict()
    details = state_dict_mismatch(expected, blur_state, shown=4)
    if details is not None:
        raise UserInputError(f"{path} does not match the KernelWizard blur generator {asdict(config)} ({details}).")
    generator.load_state_dict({k: v.to(expected[k].dtype) for k, v in blur_state.items()})
    generator.eval().requires_grad_(False)
    return generator


# --------------------------------------------------------------------------------------------------
# The operator
# --------------------------------------------------------------------------------------------------


class KernelWizardBlur(Operator):
    r"""``nonlinear_blur`` with a KernelWizard generator: ``y = clamp(2 G((x+1)/2, k) - 1, -1, 1)``.

    ``k = kernel_scale * eps`` with ``eps`` standard normal of shape ``(1, 8 nf, H'/128, W'/128)``.

    * **Reference quirk, fixed by default.** The reference draws a new ``k`` on every call, so the
      likelihood changes between gradient steps and the measurement is not the one it scores against.
      Here ``k`` is drawn once from ``kernel_seed``; ``redraw_kernel=True`` reproduces the reference
      (then from a generator seeded with ``kernel_seed``, so runs still repeat).
    * **Image geometry.** The generator needs sides that are multiples of 128 (256x256 gives the
      reference's ``2x2`` code). Other sizes are resized bilinearly to ``H' = 128 ceil(H/128)`` (and
      ``W'``), blurred, and averaged back to ``H x W`` (area resampling); a 32x32 image is blurred at
      128x128 with a ``1x1`` code. Grey images (``C = 1``) are repeated to the generator's channels
      and the output channels averaged. Each is a documented adaptation, not the reference.
    """

    def __init__(
        self,
        image_shape: tuple[int, ...],
        generator: KernelWizardGenerator,
        kernel_seed: int = 0,
        kernel_scale: float = 1.2,
        redraw_kernel: bool = False,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3:
            raise UserInputError(f"image_shape must be (C, H, W), got {image_shape}.")
        channels, height, width = (int(s) for s in image_shape)
        model_channels = generator.config.input_nc
        if channels not in (1, model_channels):
            raise UserInputError(
                f"the KernelWizard weights blur {model_channels}-channel images; "
                f"cannot apply them to {channels} channels."
            )
        self.x_shape = (channels, height, width)
        self.work_hw = (
            KERNEL_STRIDE * math.ceil(height / KERNEL_STRIDE),
            KERNEL_STRIDE * math.ceil(width / KERNEL_STRIDE),
        )
        self.generator = generator
        self.kernel_scale = float(kernel_scale)
        self.redraw_kernel = bool(redraw_kernel)
        self._rng = torch.Generator().manual_seed(int(kernel_seed))
        shape = (1, *generator.kernel_shape(*self.work_hw))
        self.register_buffer("kernel", self.kernel_scale * torch.randn(shape, generator=self._rng))

    def _code(self, like: Tensor) -> Tensor:
        if self.redraw_kernel:
            fresh = self.kernel_scale * torch.randn(tuple(self.kernel.shape), generator=self._rng)
            return fresh.to(device=like.device, dtype=like.dtype)
        return self.kernel.to(dtype=like.dtype)

    def forward(self, x: Tensor) -> Tensor:
        channels, height, width = self.x_shape
        u = (x + 1.0) / 2.0
        if channels != self.generator.config.input_nc:
            u = u.expand(-1, self.generator.config.input_nc, -1, -1)
        resized = (height, width) != self.work_hw
        if resized:
            u = F.interpolate(u, size=self.work_hw, mode="bilinear", align_corners=False)
        blurred = self.generator(u, self._code(u))
        if resized:
            blurred = F.adaptive_avg_pool2d(blurred, (height, width))
        if channels != self.generator.config.input_nc:
            blurred = blurred.mean(dim=1, keepdim=True)
        return torch.clamp(2.0 * blurred - 1.0, -1.0, 1.0)
