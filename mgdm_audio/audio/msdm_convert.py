"""Converting MSDM's published checkpoints into the project's export (``mgdm-audio convert msdm CKPT -o DIR``).

Two layouts are read, both without running code from the file (:mod:`mgdm_audio.audio.safe_unpickle`):

* a PyTorch Lightning checkpoint (``epoch=419-valid_loss=0.014.ckpt``): a dict whose ``state_dict`` holds every
  tensor twice, as ``model.unet.<key>`` and ``model.diffusion.net.<key>`` (the ``Diffusion`` wraps the same
  ``UNet1d``);
* a whole pickled ``main.module_base.Model`` (how the MGDM repository stores it), or a pickled
  ``AudioDiffusionModel``: the module tree is walked through its ``_modules``, ``_parameters`` and ``_buffers``.

Both copies must agree; every key and shape is checked against the package's ``UNet1d`` for the chosen
architecture; the export (``model.safetensors`` + ``config.json`` + ``MODEL_CARD.md``) records the source file's
name and sha256 (``converted_from``), which ``separate``'s ``run.json`` repeats.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mgdm_audio.audio.msdm_net import (
    ISDM_KIND,
    MGDM_AUDIO_LEVELS,
    MSDM_CONFIGS,
    MSDM_KIND,
    MSDMNetConfig,
    build_unet1d,
)
from mgdm_audio.audio.safe_unpickle import PickledObject, RefusedGlobal, load_checkpoint
from mgdm_audio.core.edm import EDMConfig
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.training.export import CONFIG_NAME, export_model, file_sha256, state_dict_mismatch

STEMS = ("bass", "drums", "guitar", "piano")
PREFIXES = ("model.unet.", "unet.")
DUPLICATE_PREFIXES = ("model.diffusion.net.", "diffusion.net.")


def module_state_dict(record: PickledObject, prefix: str = "") -> dict[str, Tensor]:
    """``nn.Module.state_dict()`` of a pickled module tree kept as records (persistent parameters and buffers)."""
    attrs = record.attributes()
    out: dict[str, Tensor] = {}
    skip = set(attrs.get("_non_persistent_buffers_set") or ())
    for table in ("_parameters", "_buffers"):
        for name, value in dict(attrs.get(table) or {}).items():
            if isinstance(value, Tensor) and name not in skip:
                out[prefix + name] = value
    for name, child in dict(attrs.get("_modules") or {}).items():
        if isinstance(child, PickledObject):
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out


def _flat_state(obj: Any, path: Path) -> tuple[dict[str, Tensor], str]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return {k: v for k, v in obj["state_dict"].items() if isinstance(v, Tensor)}, "lightning-checkpoint"
    if isinstance(obj, PickledObject):
        return module_state_dict(obj), f"pickled {obj.qualified_name}"
    raise UserInputError(
        f"{path} holds neither a Lightning checkpoint (a dict with 'state_dict') nor a pickled MSDM model "
        f"(found {type(obj).__name__})."
    )


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    """Equal values; two views of one storage (how the file shares the copies) are equal without reading them."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    shared = a.device == b.device and a.data_ptr() == b.data_ptr() and a.stride() == b.stride()
    return shared or torch.equal(a, b)


def extract_unet_state(state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """The ``UNet1d`` tensors under their own names, after checking the ``Diffusion``'s copy agrees with them."""
    prefix = next((p for p in PREFIXES if any(k.startswith(p) for k in state)), None)
    if prefix is None:
        shown = ", ".join(sorted(state)[:3]) or "no tensors"
        raise UserInputError(f"{path} has no tensors under model.unet.* or unet.* (found {shown}); not an MSDM model.")
    unet = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    duplicate_prefix = prefix.replace("unet.", "diffusion.net.")
    duplicate = {k[len(duplicate_prefix) :]: v for k, v in state.items() if k.startswith(duplicate_prefix)}
    if duplicate:
        detail = state_dict_mismatch(unet, duplicate)
        differ = detail or next((k for k in unet if not _same_tensor(unet[k], duplicate[k])), None)
        if differ is not None:
            raise UserInputError(f"{path}: the {prefix}* and {duplicate_prefix}* copies differ ({differ}).")
    return unet


def _hyper_parameters(obj: Any) -> dict[str, Any]:
    """Plain-valued hyper-parameters (Lightning's ``hyper_parameters`` or a pickled module's ``_hparams``)."""
    hp: Any = obj.get("hyper_parameters") if isinstance(obj, Mapping) else None
    if hp is None and isinstance(obj, PickledObject):
        hp = obj.attributes().get("_hparams")
    if isinstance(hp, PickledObject):
        hp = {**hp.attributes(), **hp.items}
    if not isinstance(hp, Mapping):
        return {}
    return {str(k): v for k, v in hp.items() if isinstance(v, int | float | str | bool)}


def _edm_from(hparams: dict[str, Any], path: Path) -> EDMConfig:
    threshold = float(hparams.get("diffusion_dynamic_threshold", 0.0))
    if threshold != 0.0:
        raise UserInputError(
            f"{path} was trained with diffusion_dynamic_threshold={threshold}; only 0 (MSDM's hard clamp) is supported."
        )
    sigma_data = float(hparams.get("diffusion_sigma_data", 0.2))
    return EDMConfig(sigma_data=sigma_data, clamp_output=True, **MGDM_AUDIO_LEVELS)


def resolve_architecture(architecture: str | Path | MSDMNetConfig) -> MSDMNetConfig:
    """A :data:`MSDM_CONFIGS` name, a JSON file of ``UNet1d`` keyword arguments, or a config object."""
    if isinstance(architecture, MSDMNetConfig):
        return architecture
    if str(architecture) in MSDM_CONFIGS:
        return MSDM_CONFIGS[str(architecture)]
    path = Path(architecture)
    if not path.is_file():
        raise UserInputError(
            f"--architecture {architecture}: not one of {', '.join(MSDM_CONFIGS)} and not a JSON file."
        )
    try:
        return MSDMNetConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, AttributeError) as err:
        raise UserInputError(f"--architecture {path} is not a JSON object of UNet1d arguments ({err}).") from None


def read_msdm_checkpoint(
    checkpoint: Path, net_config: MSDMNetConfig, architecture: str
) -> tuple[dict[str, Tensor], EDMConfig, dict[str, str]]:
    """The ``UNet1d`` tensors of ``checkpoint`` (checked against ``net_config``), its EDM parameters and the record
    of the source file (name, sha256, format)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise UserInputError(f"checkpoint {checkpoint} does not exist.")
    try:
        obj, file_format = load_checkpoint(checkpoint)
    except RefusedGlobal as err:
        raise UserInputError(
            f"{checkpoint} refers to {err}, which is not on the converter's allow-list, so it was not loaded "
            "(unpickling it could run code)."
        ) from None
    flat, layout = _flat_state(obj, checkpoint)
    unet = extract_unet_state(flat, checkpoint)
    edm = _edm_from(_hyper_parameters(obj), checkpoint)
    with torch.device("meta"):
        expected = build_unet1d(net_config).state_dict()
    detail = state_dict_mismatch(expected, unet, shown=3)
    if detail is not None:
        raise UserInputError(
            f"{checkpoint} does not match the {architecture} MSDM network ({detail}); pass the right --architecture."
        )
    source = {
        "file": checkpoint.name,
        "sha256": file_sha256(checkpoint),
        "format": f"{file_format}, {layout}",
        "package": "audio-diffusion-pytorch==0.0.43",
    }
    return {k: v.float() for k, v in unet.items()}, edm, source


@dataclass(frozen=True)
class ExportOptions:
    """What a conversion writes beside the weights (the ``convert`` flags): the network's architecture (a
    :data:`MSDM_CONFIGS` name, a JSON file of ``UNet1d`` arguments, or a config), the stem names in channel order,
    the audio metadata and the prior's name (``None``: a default from the source)."""

    architecture: str | Path | MSDMNetConfig = "published"
    stems: tuple[str, ...] = STEMS
    sample_rate: int = 22050
    chunk_samples: int = 262144
    name: str | None = None

    @property
    def architecture_name(self) -> str:
        return "custom" if isinstance(self.architecture, MSDMNetConfig) else str(self.architecture)


def _write_export(
    out_dir: Path,
    weights: dict[str, Tensor],
    architecture: dict[str, Any],
    sources: list[dict[str, str]],
    options: ExportOptions,
    name: str,
    command: str,
) -> dict[str, Any]:
    names = ", ".join(f"{s['file']} (sha256 {s['sha256'][:12]}...)" for s in sources)
    config = {
        "name": options.name or name,
        "parameters": sum(v.numel() for v in weights.values()),
        "training_steps": None,
        "converted_from": sources[0]
        if len(sources) == 1
        else {
            "file": " + ".join(s["file"] for s in sources),
            "sha256": " + ".join(s["sha256"] for s in sources),
            "format": sources[0]["format"],
            "members": sources,
        },
        "model": {"factory": "mgdm_audio.audio.msdm_net:msdm_prior_from_export_config", "architecture": architecture},
        "metadata": {
            "description": f"MSDM prior converted from {names}: audio-diffusion-pytorch 0.0.43 UNet1d, EDM.",
            "stems": list(options.stems),
            "sample_rate": options.sample_rate,
            "chunk_samples": options.chunk_samples,
            "data": "As published by the checkpoint's authors (MSDM: Slakh2100 train split, 22050 Hz mono).",
            "licence": "That of the source checkpoint; the converter adds nothing.",
        },
    }
    recipe_text = f"# converted, not trained here:\n# {command}\nsources: {json.dumps(sources)}\n"
    return export_model(out_dir, weights, config, recipe_text)


def _check_out(out_dir: Path) -> None:
    if (out_dir / CONFIG_NAME).exists():
        raise UserInputError(f"-o {out_dir} already holds an export ({CONFIG_NAME}); choose an empty folder.")


def convert_msdm(checkpoint: Path, out_dir: Path, options: ExportOptions = ExportOptions()) -> dict[str, Any]:
    """Convert ``checkpoint`` into an export folder ``out_dir``; returns the export's config. Nothing is written
    unless every check passed."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    _check_out(out_dir)
    net_config = resolve_architecture(options.architecture)
    if len(options.stems) != net_config.stems:
        raise UserInputError(
            f"--stems lists {len(options.stems)} stems but the network has {net_config.stems} channels."
        )
    arch_name = options.architecture_name
    unet, edm, source = read_msdm_checkpoint(checkpoint, net_config, arch_name)
    architecture_config = {"kind": MSDM_KIND, "unet1d": net_config.to_dict(), "edm": edm.to_dict()}
    command = f"mgdm-audio convert msdm {checkpoint.name} -o {out_dir.name} --architecture {arch_name}"
    weights = {f"net.{k}": v for k, v in unet.items()}
    return _write_export(out_dir, weights, architecture_config, [source], options, checkpoint.stem, command)


def convert_isdm(checkpoints: list[Path], out_dir: Path, options: ExportOptions = ExportOptions()) -> dict[str, Any]:
    """Convert MSDM's four single-stem (ISDM, "weakly MSDM") checkpoints, one per stem in ``options.stems`` order,
    into one export of the product prior (:class:`~mgdm_audio.audio.msdm_net.ISDMPrior`). The architecture is the
    4-stem name or file; each member is the same network with one input channel."""
    out_dir = Path(out_dir)
    _check_out(out_dir)
    if len(checkpoints) != len(options.stems):
        raise UserInputError(
            f"convert isdm needs one checkpoint per stem ({', '.join(options.stems)}), got {len(checkpoints)}."
        )
    net_config = replace(resolve_architecture(options.architecture), in_channels=1)
    weights: dict[str, Tensor] = {}
    members, sources = [], []
    for i, checkpoint in enumerate(checkpoints):
        unet, edm, source = read_msdm_checkpoint(
            Path(checkpoint), net_config, f"{options.architecture_name} (one channel)"
        )
        weights.update({f"stems.{i}.net.{k}": v for k, v in unet.items()})
        members.append({"kind": MSDM_KIND, "unet1d": net_config.to_dict(), "edm": edm.to_dict()})
        sources.append(source)
    if len({json.dumps(m["edm"], sort_keys=True) for m in members}) != 1:
        raise UserInputError("the ISDM checkpoints were trained with different EDM parameters.")
    command = f"mgdm-audio convert isdm {' '.join(Path(c).name for c in checkpoints)} -o {out_dir.name}"
    architecture_config = {"kind": ISDM_KIND, "members": members}
    return _write_export(out_dir, weights, architecture_config, sources, options, out_dir.name, command)
