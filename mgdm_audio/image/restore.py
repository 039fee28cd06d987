r"""``mgdm-audio restore``: restore one image (or measurement) with an image prior and a posterior sampler.

:func:`restore` reads ``IMAGE``, turns it into a measurement ``y`` of the task's operator ``A`` at the prior's
image shape ``(C, H, W)``, runs :func:`mgdm_audio.image.solve.solve` (``K`` posterior samples) and writes

* ``OUT.png``: the restoration (sample 1, or the posterior mean when ``K > 1``) at the prior's resolution, 8-bit
  (``u = round(255 (x + 1) / 2)``);
* ``OUT_figure.png``: a figure with the panels ``[clean reference (with --degrade)], measurement, restoration
  (sample 1)`` and, when ``K > 1``, the posterior mean and the per-pixel spread (standard deviation over the
  ``K`` samples, mean over channels, own colour bar); with ``--degrade`` the titles give PSNR / SSIM against
  the clean image (:mod:`mgdm_audio.metrics.image`).

Both files are written to temporary names in the output folder and renamed at the end: a failed run writes
nothing. Existing outputs are refused before any work unless ``force`` (:mod:`mgdm_audio.core.outputs`). Every
user mistake (unreadable file, unknown task / prior / sampler / preset, a sampler that cannot handle the task, e.g.
``ddrm`` without SVD pieces) raises one :class:`UserInputError` before any sampling.

How the input file is read (the rules of ``--degrade`` and of each task):

* ``--degrade``: the file is a CLEAN image; the measurement is made with
  :func:`~mgdm_audio.image.solve.measure`, ``y = A(x) + sigma_y z`` (``z`` seeded with ``seed + 1000003``,
  so it differs from the sampler's initial noise drawn with ``seed``). A ``.npy`` file then holds the clean
  image in ``[-1, 1]``, of shape ``(C, H, W)``, ``(1, C, H, W)`` or ``(H, W)`` for one channel.
* Without ``--degrade`` the file IS the measurement:

  - a ``.npy`` array of ``A(x)``'s shape (with or without the batch axis of 1), used as it is, for any task;
  - ``blur``, ``motion_blur``, ``high_dynamic_range``, ``jpeg2``, ``nonlinear_blur`` (the measurement is an
    image of the prior's size): the image is ``y``;
  - ``outpainting_half``, ``inpainting_center`` (selections): ``y = A(image)``, the observed pixels of the
    given image (what lies in the missing region is ignored);
  - ``sr4``, ``sr16``: a low-resolution image of ``H/f x W/f`` pixels is ``y``; a full-size ``H x W`` image
    gives ``y = A(image)`` (its ``f x f`` block average); any other size is resized to the nearer of the two
    (in area: at most ``f`` times the low-resolution area counts as low resolution);
  - ``phase_retrieval``: an image is not a Fourier magnitude: use ``--degrade`` or a ``.npy`` measurement.

Images are read with Pillow (PNG, JPEG, BMP, TIFF, WebP, ...; 8- or 16-bit; the first frame). An alpha channel
is composited on black. A channel mismatch is converted (RGB to grey with the ITU-R 601 luma
``0.299 R + 0.587 G + 0.114 B``, grey to RGB by repetition) and a size mismatch is resized (bicubic, aspect
ratio not kept), each with a note passed to ``note``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mgdm_audio.core.atomic import created_folders, publish, remove_empty_folders, temp_sibling
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.operators import Operator
from mgdm_audio.core.outputs import refuse_existing
from mgdm_audio.core.runtime import resolve_device
from mgdm_audio.image.operators import TASKS, SuperResolution, make_operator
from mgdm_audio.image.priors import ImagePrior, load_image_prior
from mgdm_audio.image.solve import (
    SIGMA_Y,
    Restoration,
    image_run,
    measure,
    sampler_applicable,
    solve,
)
from mgdm_audio.image.tasks import INPUT_RULES
from mgdm_audio.samplers.base import Callback

__all__ = [
    "IMAGE_SHAPED_TASKS",
    "INPUT_RULES",
    "MEASUREMENT_SEED_OFFSET",
    "MEASUREMENT_ONLY_TASKS",
    "SELECTION_TASKS",
    "SUPER_RESOLUTION_TASKS",
    "InputFile",
    "read_input",
    "restore",
    "figure_path",
]

#: tasks whose measurement is an image of the prior's size (the given image is ``y``)
IMAGE_SHAPED_TASKS = ("blur", "motion_blur", "high_dynamic_range", "jpeg2", "nonlinear_blur")
#: tasks whose measurement is a subset of the pixels (``y = A(image)``)
SELECTION_TASKS = ("outpainting_half", "inpainting_center")
#: block-average super-resolution tasks and their factors
SUPER_RESOLUTION_TASKS = {"sr4": 4, "sr16": 16}
#: tasks whose measurement is not an image (``--degrade`` or a ``.npy`` array only)
MEASUREMENT_ONLY_TASKS = ("phase_retrieval",)
#: the measurement noise is drawn with ``seed + MEASUREMENT_SEED_OFFSET`` (the sampler uses ``seed``)
MEASUREMENT_SEED_OFFSET = 1_000_003
#: ITU-R BT.601 luma weights (what Pillow's ``convert("L")`` uses)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass
class InputFile:
    """What was read: ``kind`` is ``"image"`` (``array`` ``(C, h, w)`` in ``[0, 1]``) or ``"array"`` (raw .npy)."""

    path: Path
    kind: str
    array: np.ndarray


@dataclass
class Panel:
    """One figure panel: an image ``(C, H, W)`` in ``[-1, 1]`` or a 2-D ``map`` shown with a colour map."""

    name: str
    title: str
    data: np.ndarray
    kind: str = "image"
    cmap: str = "viridis"
    colorbar: bool = False


def figure_path(out: Path) -> Path:
    """``OUT.png`` (the restored image) -> ``OUT_figure.png`` (the figure, same folder)."""
    return out.with_name(f"{out.stem}_figure{out.suffix}")


# --------------------------------------------------------------------------------------------------
# Reading and fitting the input
# --------------------------------------------------------------------------------------------------


def _pillow_to_unit(img: Any, note: Callable[[str], None]) -> np.ndarray:
    """A Pillow image as ``(C, h, w)`` float64 in ``[0, 1]``, ``C`` 1 or 3, alpha composited on black."""
    from PIL import Image

    has_alpha = img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        grey = img.mode in ("LA", "La")
        black = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, img.convert("RGBA")).convert("L" if grey else "RGB")
        note("composited the image's alpha channel on black")
    if img.mode.startswith("I"):  # 16-bit PNG/TIFF greyscale ("I;16", "I")
        arr = np.asarray(img, dtype=np.float64) / 65535.0
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
    elif img.mode in ("1", "L"):
        arr = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    else:
        arr = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    arr = np.clip(arr, 0.0, 1.0)
    return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)


def read_input(path: str | Path, note: Callable[[str], None] | None = None) -> InputFile:
    """Read an image file (Pillow) or a ``.npy`` array; one :class:`UserInputError` if it cannot be read."""
    note = note or (lambda _: None)
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file; give an image (PNG, JPEG, ...) or a .npy array.")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise UserInputError(f"{path} is not a readable .npy array ({err}).") from None
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)) or arr.size == 0:
            raise UserInputError(f"{path} must hold a non-empty real-valued array, got dtype {arr.dtype}.")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise UserInputError(f"{path} contains NaN or infinite values.")
        return InputFile(path, "array", arr)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            arr = _pillow_to_unit(img, note)
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise UserInputError(
            f"{path} cannot be read as an image ({type(err).__name__}: {err}); give a PNG/JPEG/... file or a .npy "
            "array."
        ) from None
    return InputFile(path, "image", arr)


def _fit_channels(arr: np.ndarray, channels: int, note: Callable[[str], None]) -> np.ndarray:
    have = arr.shape[0]
    if have == channels:
        return arr
    if have == 3 and channels == 1:
        note("converted the RGB image to greyscale (luma 0.299 R + 0.587 G + 0.114 B) for the 1-channel prior")
        return np.tensordot(np.asarray(LUMA_WEIGHTS), arr, axes=1)[None]
    if have == 1 and channels == 3:
        note("converted the greyscale image to RGB (repeated channel) for the 3-channel prior")
        return np.repeat(arr, 3, axis=0)
    raise UserInputError(f"the image has {have} channels and the prior {channels}; give a .npy array instead.")


def _fit_size(
    arr: np.ndarray, size: tuple[int, int], note: Callable[[str], None], what: str = "the image"
) -> np.ndarray:
    """Resize ``(C, h, w)`` in ``[0, 1]`` to ``size = (H, W)`` channel by channel (Pillow bicubic, clipped)."""
    from PIL import Image

    h, w = arr.shape[1:]
    if (h, w) == tuple(size):
        return arr
    height, width = size
    note(f"resized {what} from {w}x{h} to {width}x{height} pixels (bicubic; W x H)")
    planes = [
        np.asarray(Image.fromarray(plane.astype(np.float32)).resize((width, height), Image.Resampling.BICUBIC))
        for plane in arr
    ]
    return np.clip(np.stack(planes).astype(np.float64), 0.0, 1.0)


def _unit_to_tensor(arr: np.ndarray) -> Tensor:
    """``(C, H, W)`` in ``[0, 1]`` -> ``(1, C, H, W)`` float32 in ``[-1, 1]``."""
    return torch.from_numpy(2.0 * arr - 1.0).float()[None]


def _array_as(arr: np.ndarray, shape: tuple[int, ...], path: Path, what: str) -> Tensor:
    """A raw array as ``(1, *shape)``: accepts ``shape``, ``(1, *shape)``, or ``shape[1:]`` when ``shape[0] == 1``."""
    accepted = [shape, (1, *shape)] + ([shape[1:]] if len(shape) > 1 and shape[0] == 1 else [])
    if tuple(arr.shape) not in accepted:
        raise UserInputError(f"{path} has shape {tuple(arr.shape)}; {what} has shape {shape} (or {(1, *shape)}).")
    return torch.from_numpy(arr.reshape(1, *shape)).float()


def _clean_image(source: InputFile, image_shape: tuple[int, int, int], note: Callable[[str], None]) -> Tensor:
    """The clean image ``(1, C, H, W)`` in ``[-1, 1]`` for ``--degrade``."""
    if source.kind == "array":
        x = _array_as(source.array, image_shape, source.path, "a clean image for this prior")
        if float(x.abs().max()) > 1.0 + 1e-3:
            raise UserInputError(f"{source.path}: a clean .npy image must lie in [-1, 1] (the project's convention).")
        return x.clamp(-1.0, 1.0)
    c, h, w = image_shape
    return _unit_to_tensor(_fit_size(_fit_channels(source.array, c, note), (h, w), note))


def _check_measurement_kind(source: InputFile, task: str, degrade: bool) -> None:
    """Refuse, before any work, an image given as a measurement that is not an image (phase retrieval)."""
    if not degrade and source.kind == "image" and task in MEASUREMENT_ONLY_TASKS:
        raise UserInputError(
            f"{source.path}: an image is not a {task} measurement; add --degrade (the image is clean) or give a "
            ".npy array of A(x)."
        )


def _measurement(
    source: InputFile,
    task: str,
    operator: Operator,
    image_shape: tuple[int, int, int],
    device: str,
    note: Callable[[str], None],
) -> Tensor:
    """The measurement ``y`` ``(1, *A(x).shape[1:])`` on ``device`` given by the input file (no ``--degrade``)."""
    c, h, w = image_shape
    _check_measurement_kind(source, task, degrade=False)
    with torch.no_grad():
        if source.kind == "array":
            y_shape = tuple(operator(torch.zeros(1, *image_shape, device=device)).shape[1:])
            y = _array_as(source.array, y_shape, source.path, f"a {task} measurement for this prior (A(x))")
            return y.to(device)
        arr = _fit_channels(source.array, c, note)
        if task in SUPER_RESOLUTION_TASKS:
            f = SUPER_RESOLUTION_TASKS[task]
            low = (h // f, w // f)
            size = tuple(arr.shape[1:])
            if size == low or (size != (h, w) and size[0] * size[1] <= low[0] * low[1] * f):
                return _unit_to_tensor(_fit_size(arr, low, note, "the low-resolution image")).to(device)
            full = _unit_to_tensor(_fit_size(arr, (h, w), note)).to(device)
            note(f"took the {f}x{f} block average of the full-size image as the {low[1]}x{low[0]} measurement")
            return operator(full)
        image = _unit_to_tensor(_fit_size(arr, (h, w), note)).to(device)
        return operator(image) if task in SELECTION_TASKS else image


# --------------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------------


def measurement_view(task: str, operator: Operator, y: Tensor, image_shape: tuple[int, int, int]) -> Panel:
    """How ``y`` is shown: selections as the observed pixels with the missing ones grey (0), super-resolution
    upsampled nearest-neighbour, image-shaped tasks as ``y``, phase retrieval as ``log(1 + |y|)``."""
    with torch.no_grad():
        y = y[:1].detach()
        if task in SELECTION_TASKS:
            full = operator.adjoint(y)
            full[..., operator.missing_mask] = 0.0
            return Panel("measurement", "measurement\n(observed pixels)", full[0].cpu().numpy())
        y = y.cpu().float()
        if isinstance(operator, SuperResolution):
            f = operator.factor
            up = y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
            return Panel("measurement", f"measurement\n({y.shape[-1]}x{y.shape[-2]}, nearest)", up[0].numpy())
        if tuple(y.shape[1:]) == tuple(image_shape):
            return Panel("measurement", "measurement y", y[0].clamp(-1, 1).numpy())
        if y.ndim == 4:  # e.g. phase retrieval: a Fourier magnitude per channel
            logmag = torch.log1p(y[0].abs()).mean(dim=0)
            return Panel("measurement", "measurement\nlog(1 + |y|)", logmag.numpy(), kind="map", cmap="magma")
        flat = y[0].reshape(1, -1).numpy()
        return Panel("measurement", f"measurement ({flat.shape[1]} values)", flat, kind="map", cmap="magma")


def _show_image(ax: Any, image: np.ndarray) -> Any:
    unit = np.clip((image + 1.0) / 2.0, 0.0, 1.0)
    if unit.shape[0] == 1:
        return ax.imshow(unit[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    return ax.imshow(np.moveaxis(unit[:3], 0, -1), interpolation="nearest")


def plot_panels(panels: list[Panel], path: Path, title: str) -> None:
    """One row of panels (Agg backend) saved as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 3.4), squeeze=False, layout="constrained")
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel.kind == "image":
            _show_image(ax, panel.data)
        else:
            vmin = 0.0 if panel.colorbar else None
            aspect = "auto" if panel.data.shape[0] == 1 else "equal"  # a flat vector is stretched to a strip
            im = ax.imshow(panel.data, cmap=panel.cmap, vmin=vmin, interpolation="nearest", aspect=aspect)
            if panel.colorbar:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(panel.title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def _scores(estimate: Tensor, clean: Tensor) -> dict[str, float | None] | None:
    """PSNR (dB) and SSIM of ``estimate`` against ``clean`` (``None`` if the metrics module is missing)."""
    try:
        from mgdm_audio.metrics.image import psnr, ssim
    except ImportError:
        return None
    est, ref = estimate.detach().cpu().double(), clean.detach().cpu().double()

    def finite(v: float) -> float | None:
        return round(v, 4) if math.isfinite(v) else None

    return {"psnr": finite(float(psnr(est, ref)[0])), "ssim": finite(float(ssim(est, ref)[0]))}


def _score_text(scores: dict[str, float | None] | None) -> str:
    if not scores:
        return ""
    p, s = scores["psnr"], scores["ssim"]
    return f"\nPSNR {p:.2f} dB, SSIM {s:.3f}" if p is not None and s is not None else "\nidentical to the clean image"


def _to_uint8(image: Tensor) -> np.ndarray:
    """``(C, H, W)`` in ``[-1, 1]`` -> ``(H, W)`` or ``(H, W, 3)`` uint8, ``round(255 (x + 1) / 2)``."""
    unit = ((image.detach().cpu().double() + 1.0) / 2.0).clamp(0.0, 1.0)
    arr = np.rint(unit.numpy() * 255.0).astype(np.uint8)
    return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)


def _write_outputs(out: Path, panels: list[Panel], title: str, restored: np.ndarray) -> list[Path]:
    """Write ``OUT.png`` and the figure through temporary files, then rename both (nothing on error)."""
    from PIL import Image

    targets = [out, figure_path(out)]
    made = created_folders(out.parent)
    temps: list[Path] = []
    try:
        for target in targets:
            temps.append(temp_sibling(target))
        Image.fromarray(restored).save(temps[0], format="PNG")
        plot_panels(panels, temps[1], title)
        for temp, target in zip(temps, targets, strict=True):
            publish(temp, target)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
        remove_empty_folders(made)  # only those left empty by a failure
    return targets


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------


def preset_label(preset: str, resolved: str) -> str:
    """The preset as given, and the sampler preset it resolved to where they differ (``default: image-latent``)."""
    return preset if resolved == preset else f"{preset}: {resolved}"


def _check_request(
    image: Path, out: Path, task: str, sampler: str, preset: str, n_samples: int, sigma_y: float, force: bool
) -> None:
    """The checks that need no file and no model (one clear error each)."""
    if task not in TASKS:
        raise UserInputError(f"unknown --task {task!r}; choose one of: {', '.join(TASKS)}.")
    image_run(sampler, preset, {})
    if n_samples < 1:
        raise UserInputError(f"--n-samples must be at least 1, got {n_samples}.")
    if not (math.isfinite(sigma_y) and sigma_y > 0):
        raise UserInputError(f"--sigma-y must be a positive number, got {sigma_y}.")
    if out.suffix.lower() != ".png":
        raise UserInputError(f"-o {out}: the output must be a .png file name (OUT_figure.png is written beside it).")
    if out.is_dir():
        raise UserInputError(f"-o {out} is a folder; give a .png file name.")
    folder = out.parent  # checked now: the outputs are only written after sampling
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UserInputError(f"-o {out}: {folder} is not a writable folder; choose another output path.")
    if image.resolve() in (out.resolve(), figure_path(out).resolve()):
        raise UserInputError(f"-o {out} would overwrite the input {image}; choose another name.")
    refuse_existing([out, figure_path(out)], force)


def restore(
    image: str | Path,
    out: str | Path,
    task: str,
    prior: str | Path,
    sampler: str = "mgdm",
    preset: str = "default",
    n_samples: int = 1,
    degrade: bool = False,
    seed: int = 0,
    sigma_y: float = SIGMA_Y,
    device: str = "auto",
    callback: Callback | None = None,
    note: Callable[[str], None] | None = None,
    kernel_wizard: str | Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Restore ``image`` (see the module docstring for the input rules); write ``out`` and ``OUT_figure.png``
    (existing files only with ``force``).

    ``callback`` receives the sampler's step states (``i``, ``total``, ...); ``note`` receives one sentence per
    conversion applied to the input.
    Returns the run summary: task, prior, sampler, preset, seed, n_samples, sigma_y, device, nfe, vjp,
    seconds (sampler wall time), total_seconds, psnr/ssim (of the written restoration; ``None`` without
    ``--degrade``), scores per panel, panels, outputs and notes.
    """
    start = time.perf_counter()
    notes: list[str] = []

    def add_note(text: str) -> None:
        notes.append(text)
        if note is not None:
            note(text)

    image, out = Path(image), Path(out)
    _check_request(image, out, task, sampler, preset, n_samples, sigma_y, force)
    if kernel_wizard is not None and task != "nonlinear_blur":
        raise UserInputError(f"--kernel-wizard applies to --task nonlinear_blur only, not {task}.")
    device = str(resolve_device(device))
    source = read_input(image, add_note)
    _check_measurement_kind(source, task, degrade)
    loaded: ImagePrior = load_image_prior(prior, device=device)
    c = loaded.image_shape[0]
    if c not in (1, 3):
        raise UserInputError(f"restore writes PNG images, but the prior {loaded.name} has {c} channels (need 1 or 3).")
    operator = make_operator(task, loaded.image_shape, kernel_wizard).to(device)
    reason = sampler_applicable(sampler, operator, loaded, preset)
    if reason is not None:
        raise UserInputError(f"--sampler {sampler} cannot restore --task {task} with this prior: {reason}")

    clean: Tensor | None = None
    if degrade:
        clean = _clean_image(source, loaded.image_shape, add_note).to(device)
        y = measure(operator, clean, sigma_y, seed + MEASUREMENT_SEED_OFFSET)
    else:
        y = _measurement(source, task, operator, loaded.image_shape, device, add_note)

    result: Restoration = solve(loaded, operator, y, sampler, preset, n_samples, seed, sigma_y, callback)
    sample = result.samples[:, 0]
    output = result.mean if n_samples > 1 else sample

    panels: list[Panel] = []
    scores: dict[str, dict[str, float | None] | None] = {}
    if clean is not None:
        panels.append(Panel("clean", "clean reference", clean[0].cpu().numpy()))
    measured = measurement_view(task, operator, y, loaded.image_shape)
    if clean is not None and measured.kind == "image" and tuple(y.shape[1:]) == tuple(loaded.image_shape):
        scores["measurement"] = _scores(y.clamp(-1, 1), clean)
        measured.title += _score_text(scores["measurement"])
    panels.append(measured)
    scores["sample"] = _scores(sample, clean) if clean is not None else None
    panels.append(
        Panel("restoration", "restoration (sample 1)" + _score_text(scores["sample"]), sample[0].cpu().numpy())
    )
    if n_samples > 1:
        scores["mean"] = _scores(result.mean, clean) if clean is not None else None
        mean_title = f"posterior mean (K={n_samples})" + _score_text(scores["mean"])
        panels.append(Panel("mean", mean_title, result.mean[0].cpu().numpy()))
        spread = result.spread[0].mean(dim=0).cpu().numpy()
        panels.append(Panel("spread", "per-pixel spread (std)", spread, kind="map", colorbar=True))
    title = (
        f"{task} | prior {loaded.name} | {sampler} ({preset_label(preset, result.sampler_preset)}) | K={n_samples} "
        f"| NFE {result.nfe}, VJP {result.vjp}"
        f" | seed {seed}"
    )
    outputs = _write_outputs(out, panels, title, _to_uint8(output[0]))
    final = scores.get("mean" if n_samples > 1 else "sample") or {}
    return {
        "input": str(image),
        "task": task,
        "prior": loaded.name,
        "sampler": sampler,
        "preset": preset,
        "sampler_preset": result.sampler_preset,
        "seed": seed,
        "n_samples": n_samples,
        "sigma_y": sigma_y,
        "degrade": degrade,
        "device": device,
        "nfe": result.nfe,
        "vjp": result.vjp,
        "seconds": round(result.seconds, 3),
        "total_seconds": round(time.perf_counter() - start, 3),
        "psnr": final.get("psnr"),
        "ssim": final.get("ssim"),
        "scores": {k: v for k, v in scores.items() if v is not None},
        "panels": [p.name for p in panels],
        "outputs": [str(p) for p in outputs],
        "notes": notes,
    }
