r"""Priors and operators from other libraries, loaded from local disk (no network, never unpickled).

* :func:`load_diffusers_prior`: a diffusers ``UNet2DModel`` with its scheduler config, as saved by
  ``save_pretrained`` (a pipeline folder ``unet/`` + ``scheduler/``, or a bare UNet folder with a
  ``scheduler_config.json``). Weights are read from safetensors only.
* :func:`load_eps_checkpoint`: the user's own network ``net(x_vp, t)`` built by a factory, weights from a
  ``.safetensors`` state dict, with the model's ``alphas_cumprod``.
* :func:`from_deepinv_physics`, :func:`from_deepinv_denoiser`: thin wrappers that let a DeepInverse
  ``Physics`` be an :class:`~mgdm_audio.core.operators.Operator` and a DeepInverse ``Denoiser`` be a prior.

Conventions. Images are ``(B, C, H, W)`` in ``[-1, 1]``, as DDPM-family models (diffusers included) are
trained. A discrete VP model with cumulative products ``abar_model[t]``, ``t = 0..T-1``, becomes a VE denoiser
through the padded table ``abar[0] = 1, abar[k] = abar_model[k - 1]`` (as the MGDM reference code pads it):

.. math:: x_{vp} = x / \sqrt{1 + \sigma^2}, \qquad D(x, \sigma) = x - \sigma\, \epsilon(x_{vp}, t(\sigma)),

with ``t(sigma)`` the (fractional) model step whose ``abar_model`` equals ``1 / (1 + sigma^2)``; at a table
level ``sigma_k`` the network gets the integer step ``k - 1`` (``reference_index_offset=True`` passes ``k``
instead, the reference code's one-step offset). v-prediction uses ``x0 = sqrt(abar) x_vp - sqrt(1 - abar) v``
and sample (x0) prediction ``x0 = net(x_vp, t)``.

DeepInverse works on images in ``[0, 1]``: ``u = (x + 1) / 2``. A noisy ``x = x0 + sigma n`` is
``u = u0 + (sigma / 2) n``, so a deepinv Gaussian denoiser ``D01(u, s)`` gives our denoiser

.. math:: D(x, \sigma) = 2\, D_{01}\big((x + 1) / 2,\ \sigma / 2\big) - 1,

and a deepinv operator ``A01`` on ``[0, 1]`` images acts on ours as ``x -> A01((x + 1) / 2)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mgdm_audio.core.denoiser import (
    Denoiser,
    VEDenoiser,
    VPEpsDenoiser,
    VPSampleDenoiser,
    VPVDenoiser,
)
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.operators import LinearOperator, Operator
from mgdm_audio.core.schedules import NoiseLevels, linear_beta_alphas_cumprod, scaled_linear_alphas_cumprod

__all__ = [
    "PREDICTION_TYPES",
    "SCHEDULES",
    "DeepinvLinearOperator",
    "DeepinvOperator",
    "DiffusersUNetNet",
    "VPSampleDenoiser",
    "alphas_cumprod_from_scheduler_config",
    "find_diffusers_files",
    "from_deepinv_denoiser",
    "from_deepinv_physics",
    "load_diffusers_prior",
    "load_eps_checkpoint",
    "wrap_vp_network",
]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
UNET_SHARD_INDEX = "diffusion_pytorch_model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".th")
INSTALL_HINT = "pip install 'mgdm_audio[diffusers]'"

ImageShape = tuple[int, int, int]


def wrap_vp_network(
    net: Callable[[Tensor, Tensor], Tensor],
    alphas_cumprod: Tensor,
    prediction: str = "epsilon",
    *,
    reference_index_offset: bool = False,
) -> Denoiser:
    """The VE denoiser of a discrete VP network ``net(x_vp, t)`` predicting ``prediction``.

    ``prediction`` is diffusers' ``prediction_type``: ``epsilon`` (noise), ``v_prediction``
    (``v = sqrt(abar) eps - sqrt(1 - abar) x0``) or ``sample`` (``x0``).
    """
    kinds: dict[str, type[VPEpsDenoiser | VPVDenoiser | VPSampleDenoiser]] = {
        "epsilon": VPEpsDenoiser,
        "v_prediction": VPVDenoiser,
        "sample": VPSampleDenoiser,
    }
    if prediction not in kinds:
        raise UserInputError(
            f"prediction type {prediction!r} is not supported; use one of {', '.join(PREDICTION_TYPES)}."
        )
    return kinds[prediction](net, alphas_cumprod, reference_index_offset=reference_index_offset)


# ----------------------------------------------------------------------------------------------------------------
# scheduler config -> alphas_cumprod


def _cosine_alphas_cumprod(n: int, max_beta: float = 0.999, offset: float = 0.008) -> Tensor:
    r"""Nichol & Dhariwal's cosine schedule as discrete betas capped at ``max_beta``.

    ``f(u) = cos((u + s) / (1 + s) * pi / 2)^2``, ``beta_i = min(1 - f((i + 1) / n) / f(i / n), max_beta)``.
    """
    u = torch.arange(n + 1, dtype=torch.float64) / n
    f = torch.cos((u + offset) / (1 + offset) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, 0)


def _sigmoid_alphas_cumprod(n: int, beta_start: float, beta_end: float) -> Tensor:
    """GeoDiff's sigmoid schedule: ``beta_i = beta_start + (beta_end - beta_start) sigmoid(linspace(-6, 6, n)_i)``."""
    betas = beta_start + (beta_end - beta_start) * torch.sigmoid(torch.linspace(-6, 6, n, dtype=torch.float64))
    return torch.cumprod(1 - betas, 0)


def alphas_cumprod_from_scheduler_config(config: Mapping[str, Any], source: str = "scheduler config") -> Tensor:
    """``abar_model[t] = prod_{j <= t} (1 - beta_j)``, ``t = 0..T-1`` (float64), from a diffusers scheduler config.

    Reads ``trained_betas`` if given, else ``beta_schedule`` (``linear``, ``scaled_linear``,
    ``squaredcos_cap_v2``, ``sigmoid``) with ``beta_start``, ``beta_end`` and ``num_train_timesteps``
    (missing values take diffusers' DDPM defaults 1e-4, 0.02, 1000). Schedulers that are not
    discrete-VP (no ``beta_schedule``: score-SDE VE, EDM, flow matching) and zero-terminal-SNR
    rescaling (``sigma_max`` infinite) are refused.
    """
    if config.get("rescale_betas_zero_snr"):
        raise UserInputError(
            f"{source}: rescale_betas_zero_snr=true gives an infinite largest noise level, which this adapter does "
            "not support; use a model trained without zero-terminal-SNR rescaling."
        )
    trained = config.get("trained_betas")
    if trained is not None:
        betas = torch.as_tensor(trained, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            raise UserInputError(f"{source}: trained_betas must be a list of at least 2 numbers in (0, 1).")
        return torch.cumprod(1 - betas, 0)
    if "beta_schedule" not in config:
        name = config.get("_class_name", "this scheduler")
        raise UserInputError(
            f"{source}: {name} has no beta_schedule, so it is not a discrete VP (DDPM-family) scheduler; "
            "wrap a VE/EDM denoiser with mgdm_audio.core.denoiser.VEDenoiser instead."
        )
    schedule = config["beta_schedule"]
    n = int(config.get("num_train_timesteps", 1000))
    beta_start = float(config.get("beta_start", 1e-4))
    beta_end = float(config.get("beta_end", 0.02))
    if n < 2:
        raise UserInputError(f"{source}: num_train_timesteps must be at least 2, got {n}.")
    if schedule == "linear":
        return linear_beta_alphas_cumprod(n, beta_start, beta_end)
    if schedule == "scaled_linear":
        return scaled_linear_alphas_cumprod(n, beta_start, beta_end)
    if schedule == "squaredcos_cap_v2":
        return _cosine_alphas_cumprod(n)
    if schedule == "sigmoid":
        return _sigmoid_alphas_cumprod(n, beta_start, beta_end)
    raise UserInputError(f"{source}: beta_schedule {schedule!r} is not supported; use one of {', '.join(SCHEDULES)}.")


# ----------------------------------------------------------------------------------------------------------------
# diffusers UNet2DModel folders


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path} is not a readable JSON file ({exc}); restore it from the model.") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    return data


def find_diffusers_files(folder: str | Path) -> tuple[Path, Path]:
    """``(unet_dir, scheduler_config_path)`` of a diffusers prior folder.

    The UNet folder is ``folder/unet`` when it holds a ``config.json`` (pipeline layout), else ``folder``
    itself. The scheduler config is the first of ``folder/scheduler/scheduler_config.json``,
    ``folder/scheduler_config.json``, ``folder/../scheduler/scheduler_config.json`` (``folder`` is a
    pipeline's ``unet/``) and ``folder/../scheduler_config.json`` that exists.
    """
    root = Path(folder).expanduser()
    layout = (
        "pass a diffusers pipeline folder (unet/ and scheduler/) or a UNet2DModel folder "
        f"(config.json, {UNET_WEIGHTS}) with a scheduler_config.json"
    )
    if not root.is_dir():
        raise UserInputError(f"diffusers prior folder {root} does not exist or is not a folder; {layout}.")
    unet_dir = root / "unet" if (root / "unet" / "config.json").is_file() else root
    if not (unet_dir / "config.json").is_file():
        raise UserInputError(f"{root} holds no UNet config (config.json or unet/config.json); {layout}.")
    candidates = [
        root / "scheduler" / "scheduler_config.json",
        root / "scheduler_config.json",
        root.parent / "scheduler" / "scheduler_config.json",
        root.parent / "scheduler_config.json",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return unet_dir, candidate
    raise UserInputError(
        f"no scheduler_config.json found for {root} (looked in {', '.join(str(c) for c in candidates)}); {layout}."
    )


def _describe_key_problems(problems: Mapping[str, list[Any]], shown: int = 5) -> str:
    parts = []
    for kind, keys in problems.items():
        listed = ", ".join(str(k) for k in keys[:shown]) + (f", ... ({len(keys)} in all)" if len(keys) > shown else "")
        parts.append(f"{kind.replace('_', ' ')} [{listed}]")
    return "; ".join(parts)


def _check_safetensors_weights(unet_dir: Path) -> None:
    if (unet_dir / UNET_WEIGHTS).is_file() or (unet_dir / UNET_SHARD_INDEX).is_file():
        return
    pickled = sorted(p.name for p in unet_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise UserInputError(
            f"{unet_dir} has only pickled weights ({', '.join(pickled)}), which are never loaded because unpickling "
            "can run arbitrary code; convert them once in a trusted environment with "
            "UNet2DModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)."
        )
    raise UserInputError(
        f"{unet_dir} has no {UNET_WEIGHTS}; save the UNet with save_pretrained(safe_serialization=True)."
    )


def _check_unet_config(config: Mapping[str, Any], path: Path) -> ImageShape:
    """Refuse UNets this adapter cannot call as ``unet(x, t)``; return the image shape ``(C, H, W)``."""
    name = config.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise UserInputError(
            f"{path}: the model is a {name}, but only unconditional diffusers UNet2DModel priors are supported."
        )
    if config.get("num_class_embeds") is not None or config.get("class_embed_type") is not None:
        raise UserInputError(f"{path}: class-conditional UNet2DModel priors (class labels) are not supported.")
    if config.get("time_embedding_type", "positional") == "fourier":
        raise UserInputError(
            f"{path}: a UNet2DModel with a Fourier (noise-level) time embedding is a VE score model, not a DDPM "
            "network; wrap it with mgdm_audio.core.denoiser.VEDenoiser instead."
        )
    channels = int(config.get("in_channels", 3))
    size = config.get("sample_size")
    if size is None:
        raise UserInputError(f"{path}: sample_size is missing, so the image size of the prior is unknown.")
    height, width = (int(size), int(size)) if isinstance(size, int | float) else (int(size[0]), int(size[1]))
    out_channels = int(config.get("out_channels", channels))
    if out_channels not in (channels, 2 * channels):
        raise UserInputError(
            f"{path}: out_channels={out_channels} is neither in_channels={channels} nor twice it (learned variance)."
        )
    return channels, height, width


class DiffusersUNetNet:
    """``net(x_vp, t) = unet(x_vp, t).sample[:, :C]`` for a diffusers ``UNet2DModel``.

    The first ``C = in_channels`` output channels are kept (a learned-variance UNet also outputs the
    variance interpolation). ``t`` is the model step, fractional between table levels; a UNet with a
    learned (lookup-table) time embedding gets it rounded to the nearest integer. The input is cast to
    the UNet's dtype and the output back to the input's dtype.
    """

    def __init__(self, unet: nn.Module, channels: int, learned_time_embedding: bool = False) -> None:
        self.unet = unet
        self.channels = channels
        self.learned_time_embedding = learned_time_embedding

    def __call__(self, x_vp: Tensor, t: Tensor) -> Tensor:
        dtype = next(self.unet.parameters()).dtype
        steps = t.round().long() if self.learned_time_embedding else t.to(dtype)
        out = self.unet(x_vp.to(dtype), steps).sample
        return out[:, : self.channels].to(x_vp.dtype)


def load_diffusers_prior(
    folder: str | Path,
    device: str | torch.device = "cpu",
    *,
    reference_index_offset: bool = False,
) -> tuple[Denoiser, ImageShape]:
    """A diffusers ``UNet2DModel`` + scheduler config from local disk as a VE denoiser, and its image shape.

    ``folder`` is a pipeline folder (``unet/config.json``, ``unet/diffusion_pytorch_model.safetensors``,
    ``scheduler/scheduler_config.json``) or a bare UNet folder whose ``scheduler_config.json`` sits inside it
    or beside it (see :func:`find_diffusers_files`). ``alphas_cumprod`` comes from the scheduler config
    (:func:`alphas_cumprod_from_scheduler_config`), the wrapper from its ``prediction_type`` (``epsilon``,
    ``v_prediction`` or ``sample``). Weights are read from safetensors only, every key must match.
    Returns ``(denoiser, (C, H, W))``; the denoiser takes images in ``[-1, 1]`` and the UNet is frozen
    (``eval``, no parameter gradients; gradients with respect to ``x`` still flow).
    """
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise UserInputError(f"a diffusers prior needs the optional package diffusers: {INSTALL_HINT}.") from None

    unet_dir, scheduler_path = find_diffusers_files(folder)
    unet_config = _read_json(unet_dir / "config.json")
    image_shape = _check_unet_config(unet_config, unet_dir / "config.json")
    scheduler_config = _read_json(scheduler_path)
    alphas_cumprod = alphas_cumprod_from_scheduler_config(scheduler_config, source=str(scheduler_path))
    prediction = scheduler_config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise UserInputError(
            f"{scheduler_path}: prediction_type {prediction!r} is not one of {', '.join(PREDICTION_TYPES)}."
        )
    _check_safetensors_weights(unet_dir)
    try:
        unet, info = UNet2DModel.from_pretrained(
            unet_dir,
            use_safetensors=True,
            local_files_only=True,
            low_cpu_mem_usage=False,
            output_loading_info=True,
        )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise UserInputError(f"the UNet2DModel in {unet_dir} cannot be loaded ({exc}).") from None
    problems = {k: info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)}
    if problems:
        raise UserInputError(
            f"{unet_dir / UNET_WEIGHTS} does not match {unet_dir / 'config.json'}: {_describe_key_problems(problems)}."
        )
    unet = unet.to(device).eval().requires_grad_(False)
    learned = unet_config.get("time_embedding_type", "positional") == "learned"
    net = DiffusersUNetNet(unet, channels=image_shape[0], learned_time_embedding=learned)
    denoiser = wrap_vp_network(net, alphas_cumprod, prediction, reference_index_offset=reference_index_offset)
    return denoiser, image_shape


# ----------------------------------------------------------------------------------------------------------------
# the user's own eps network


def load_eps_checkpoint(
    weights: str | Path,
    factory: Callable[[], nn.Module],
    alphas_cumprod: Tensor,
    prediction: str = "epsilon",
    device: str | torch.device = "cpu",
    *,
    reference_index_offset: bool = False,
) -> Denoiser:
    """The user's discrete VP network ``net(x_vp, t)`` with weights from a ``.safetensors`` state dict.

    ``factory()`` builds the network (same configuration as in training); the file must hold exactly its
    state-dict keys and shapes. ``alphas_cumprod`` is the model's ``abar_model[t]``, ``t = 0..T-1``
    (decreasing, without the leading 1); ``prediction`` is ``epsilon``, ``v_prediction`` or ``sample``.
    The network is frozen (``eval``, no parameter gradients).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(weights).expanduser()
    if prediction not in PREDICTION_TYPES:
        raise UserInputError(f"prediction {prediction!r} is not supported; use one of {', '.join(PREDICTION_TYPES)}.")
    if path.suffix != ".safetensors":
        raise UserInputError(
            f"{path}: only .safetensors weights are loaded (unpickling .pt/.pth/.ckpt/.bin can run arbitrary code); "
            "convert it once in a trusted environment with "
            "safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')."
        )
    if not path.is_file():
        raise UserInputError(f"weights file {path} does not exist; check the path.")
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise UserInputError(f"{path} is not a readable safetensors file ({exc}).") from None
    net = factory()
    if not isinstance(net, nn.Module):
        raise UserInputError(f"the network factory must return a torch.nn.Module, got {type(net).__name__}.")
    expected = net.state_dict()
    problems = {
        "missing_keys": sorted(set(expected) - set(state)),
        "unexpected_keys": sorted(set(state) - set(expected)),
        "mismatched_shapes": [
            f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
            for k, v in expected.items()
            if k in state and state[k].shape != v.shape
        ],
    }
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        raise UserInputError(
            f"{path} does not match the network built by the factory: {_describe_key_problems(problems)}; "
            "build the network with the configuration it was trained with."
        )
    net.load_state_dict(state, strict=True)
    net = net.to(device).eval().requires_grad_(False)
    return wrap_vp_network(net, alphas_cumprod, prediction, reference_index_offset=reference_index_offset)


# ----------------------------------------------------------------------------------------------------------------
# DeepInverse (duck-typed: deepinv is not imported here)


def _to_unit(x: Tensor) -> Tensor:
    """``[-1, 1] -> [0, 1]``: ``u = (x + 1) / 2``."""
    return (x + 1) / 2


class DeepinvOperator(Operator):
    """``x -> physics.A((x + 1) / 2)`` (``zero_one=True``) or ``x -> physics.A(x)``; noiseless.

    The observation ``y`` stays in the physics' own units; its noise level is the ``sigma_y`` of
    :class:`~mgdm_audio.core.likelihood.InverseProblem` (deepinv's noise model is not used).
    """

    def __init__(self, physics: nn.Module, zero_one: bool = True, x_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.physics = physics
        self.zero_one = zero_one
        self.x_shape = x_shape

    def forward(self, x: Tensor) -> Tensor:
        return self.physics.A(_to_unit(x) if self.zero_one else x)


class DeepinvLinearOperator(LinearOperator):
    """A deepinv ``LinearPhysics`` acting directly on ``x``: ``A``, ``A_adjoint`` and ``A_dagger`` as ``pinv``."""

    def __init__(self, physics: nn.Module, x_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.physics = physics
        self.x_shape = x_shape

    def forward(self, x: Tensor) -> Tensor:
        return self.physics.A(x)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.physics.A_adjoint(y)

    def pinv(self, y: Tensor) -> Tensor:
        return self.physics.A_dagger(y)


def from_deepinv_physics(
    physics: Any, zero_one: bool = True, x_shape: tuple[int, ...] | None = None
) -> DeepinvOperator | DeepinvLinearOperator:
    """A deepinv ``Physics`` as an operator on our ``[-1, 1]`` images.

    ``zero_one=True`` (deepinv's convention, images in ``[0, 1]``): ``A(x) = physics.A((x + 1) / 2)``, an
    affine map even for a linear physics, so it is returned as a plain :class:`Operator` and ``y`` is the
    deepinv measurement itself. ``zero_one=False``: the physics acts on ``x`` as it is; a ``LinearPhysics``
    (it has ``A_adjoint``) then becomes a :class:`LinearOperator` usable by the linear samplers. To use
    those with a ``[0, 1]`` measurement ``y01 = A u + n`` of a linear ``A``, pass
    ``y = 2 y01 - A(1)`` and ``sigma_y = 2 sigma_01`` (since ``A x = 2 A u - A 1``).
    """
    if not callable(getattr(physics, "A", None)) or not isinstance(physics, nn.Module):
        raise UserInputError(f"expected a deepinv Physics (nn.Module with an A method), got {type(physics).__name__}.")
    if not zero_one and callable(getattr(physics, "A_adjoint", None)):
        return DeepinvLinearOperator(physics, x_shape=x_shape)
    return DeepinvOperator(physics, zero_one=zero_one, x_shape=x_shape)


def from_deepinv_denoiser(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    sigma_max: float,
    sigma_min: float = 1e-3,
    n_levels: int = 1000,
    rho: float = 7.0,
    zero_one: bool = True,
) -> Denoiser:
    """A deepinv Gaussian denoiser ``denoiser(u, sigma)`` as a prior on our ``[-1, 1]`` images.

    ``sigma_min`` and ``sigma_max`` are in the denoiser's own units (the range it was trained on, e.g.
    ``50 / 255`` for a DRUNet). With ``zero_one=True`` (images in ``[0, 1]``):
    ``D(x, sigma) = 2 denoiser((x + 1) / 2, sigma / 2) - 1`` and the noise levels double
    (``NoiseLevels.karras(2 sigma_min, 2 sigma_max, rho, n_levels)``); with ``zero_one=False``
    ``D(x, sigma) = denoiser(x, sigma)``. ``sigma`` reaches the denoiser as a ``(B,)`` tensor.
    """
    if not callable(denoiser):
        raise UserInputError(f"expected a deepinv Denoiser (callable as denoiser(x, sigma)), got {type(denoiser)}.")
    scale = 2.0 if zero_one else 1.0
    levels = NoiseLevels.karras(scale * sigma_min, scale * sigma_max, rho=rho, n=n_levels)

    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        if not zero_one:
            return denoiser(x, sigma)
        return 2 * denoiser(_to_unit(x), sigma / 2) - 1

    return VEDenoiser(denoise, levels)
