"""Export of a trained denoiser: ``model.safetensors`` + ``config.json`` + ``MODEL_CARD.md``.

* ``model.safetensors``: the EMA weights (safetensors only: loading never unpickles);
* ``config.json``: what rebuilds the module (``model.architecture``: the model's ``export_config()``),
  the recipe's ``export.metadata`` (stems, sample rate, chunk length, data description, licences), the
  training steps, the validation metrics, the sha256 of the recipe text and a fingerprint of the data;
* ``MODEL_CARD.md``: the same facts for a reader, with the recipe that reproduces the weights.

Every file is written to a temporary name in the export folder and renamed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mgdm_audio.core.atomic import file_sha256, publish, temp_sibling, write_atomic
from mgdm_audio.core.errors import UserInputError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "MODEL_CARD.md"


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Write ``state_dict`` as safetensors (atomically); returns the file's sha256."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    tmp = temp_sibling(path)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return file_sha256(path)


def model_card(config: dict[str, Any], recipe_text: str) -> str:
    """Markdown card: what the model is, what it was trained on, how, and how well."""
    meta = config.get("metadata", {})
    lines = [f"# {config.get('name', 'prior')}", ""]
    if meta.get("description"):
        lines += [str(meta["description"]), ""]
    lines += [
        "| field | value |",
        "|---|---|",
        f"| parameters | {config.get('parameters')} |",
        f"| training steps | {config.get('training_steps')} |",
        *(
            [
                f"| initialised from | `{init['path']}` ({init.get('training_steps')} steps, sha256 "
                f"`{init.get('weights_sha256')}`; new tensors: {', '.join(init.get('new') or []) or 'none'}) |"
            ]
            if (init := config.get("initialised_from"))
            else []
        ),
        *(
            [f"| converted from | `{src['file']}` (sha256 `{src['sha256']}`; {src.get('format', '')}) |"]
            if (src := config.get("converted_from"))
            else []
        ),
        f"| global batch | {config.get('batch_size')} |",
        *([f"| stems | {', '.join(meta['stems'])} |"] if meta.get("stems") else []),
        *([f"| sample rate | {meta['sample_rate']} Hz |"] if meta.get("sample_rate") else []),
        *([f"| chunk length | {meta['chunk_samples']} samples |"] if meta.get("chunk_samples") else []),
        *([f"| image shape | {tuple(meta['image_shape'])} |"] if meta.get("image_shape") else []),
        f"| weights sha256 | `{config.get('weights_sha256')}` |",
        f"| recipe sha256 | `{config.get('recipe_sha256')}` |",
        f"| data fingerprint | `{config.get('data_fingerprint')}` |",
        "",
    ]
    if meta.get("data"):
        lines += ["## Data", "", str(meta["data"]), ""]
    if meta.get("licence"):
        lines += ["## Licences", "", str(meta["licence"]), ""]
    metrics = config.get("validation") or {}
    if metrics:
        if (config.get("training") or {}).get("objective") == "regression":
            lines += ["## Validation (EMA weights, L1 waveform loss of the separated stems)", ""]
        else:
            lines += ["## Validation (EMA weights, EDM-weighted denoising loss per ln-sigma band)", ""]
        lines += ["| band | loss |", "|---|---|"]
        lines += [f"| {band} | {value:.5f} |" for band, value in metrics.items()]
        lines += [""]
    lines += ["## Recipe", "", "```yaml", recipe_text.rstrip(), "```", ""]
    lines += [
        "Weights are safetensors (no pickle). Load with "
        f"`{meta.get('load_with', 'mgdm_audio.audio.priors.load_prior')}(<folder>)`.",
        "",
    ]
    return "\n".join(lines)


def export_model(
    out_dir: Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any], recipe_text: str
) -> dict[str, Any]:
    """Write the three export files into ``out_dir``; returns the final config (with the weights hash)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    config["recipe_sha256"] = hashlib.sha256(recipe_text.encode()).hexdigest()
    config["weights_sha256"] = save_weights(out_dir / WEIGHTS_NAME, state_dict)
    write_atomic(out_dir / CONFIG_NAME, json.dumps(config, indent=1, sort_keys=True) + "\n")
    write_atomic(out_dir / CARD_NAME, model_card(config, recipe_text))
    return config


def load_export(folder: Path, build: Callable[[dict[str, Any]], nn.Module]) -> tuple[nn.Module, dict[str, Any], str]:
    """Load an export folder: ``(module in eval mode without gradients, config, weights sha256)``.

    ``build(config)`` rebuilds the module from ``config.json``. Never unpickles (safetensors only). A missing
    file, an unreadable config or weights file, or weights that do not match the architecture (missing,
    unexpected or mis-shaped tensors) raise one :class:`UserInputError` naming the file.
    """
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for p in (config_path, weights_path):
        if not p.is_file():
            raise UserInputError(f"model folder {folder} has no {p.name}; re-export it with the trainer.")
    try:
        config = json.loads(config_path.read_text())
        module = build(config)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserInputError(f"{config_path} is not a valid model config ({type(err).__name__}: {err}).") from None
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserInputError(f"{weights_path} is not a readable safetensors file ({err}); re-export it.") from None
    detail = state_dict_mismatch(module.state_dict(), state, shown=3)
    if detail is not None:
        raise UserInputError(f"{weights_path} does not match the architecture in {config_path} ({detail}).")
    module.load_state_dict(state)
    module.eval().requires_grad_(False)
    return module, config, file_sha256(weights_path)


def state_dict_mismatch(
    expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], shown: int = 3
) -> str | None:
    """``None`` when ``state`` has exactly ``expected``'s keys and shapes, else what differs: ``missing: ...;
    unexpected: ...; wrong shape: ...`` (at most ``shown`` keys each)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if not (missing or unexpected or wrong):
        return None
    return "; ".join(
        f"{what}: {', '.join(keys[:shown])}{' ...' if len(keys) > shown else ''}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    )


def load_initial_weights(model: nn.Module, folder: Path) -> dict[str, Any]:
    """Initialise ``model`` from an export folder's weights (a warm start), allowing only *new* parameters.

    Every tensor of ``folder/model.safetensors`` must exist in ``model`` with the same shape; parameters of
    ``model`` that the file lacks keep their initialisation (e.g. a zero-initialised block added to a trained
    architecture). Returns what a run records about its start: the folder, the weights' sha256, the source's
    training steps (from its ``config.json``, ``None`` if absent) and the names of the new tensors.
    """
    weights_path = folder / WEIGHTS_NAME
    if not weights_path.is_file():
        raise UserInputError(f"init_from: {folder} has no {WEIGHTS_NAME}; point it at an export folder.")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserInputError(f"init_from: {weights_path} is not a readable safetensors file ({err}).") from None
    expected = model.state_dict()
    new = sorted(set(expected) - set(state))
    detail = state_dict_mismatch(expected, {**state, **{k: expected[k] for k in new}}, shown=3)
    if detail is not None:
        raise UserInputError(f"init_from: {weights_path} does not fit the recipe's model ({detail}).")
    model.load_state_dict(state, strict=False)
    steps = None
    config_path = folder / CONFIG_NAME
    if config_path.is_file():
        try:
            steps = json.loads(config_path.read_text()).get("training_steps")
        except json.JSONDecodeError:
            steps = None
    return {"path": str(folder), "weights_sha256": file_sha256(weights_path), "training_steps": steps, "new": new}


SEPARATOR_FACTORY_SUFFIX = "discriminative:build_separator"
"""How a discriminative separator's export names its model factory (priors name others)."""


def export_factory(folder: Path) -> str:
    """The ``model.factory`` an export's ``config.json`` names ('' when it names none or cannot be read)."""
    try:
        return str(json.loads((folder / CONFIG_NAME).read_text())["model"]["factory"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def shipped_exports(weights_dir: Path, separators: bool = False) -> list[str]:
    """Names of the export folders (those with a ``config.json``) inside a package's ``weights`` folder: the
    discriminative separators (model factory ``...discriminative:build_separator``) when ``separators``, else the
    rest (the priors)."""
    if not weights_dir.is_dir():
        return []
    folders = [p for p in weights_dir.iterdir() if (p / CONFIG_NAME).is_file()]
    return sorted(p.name for p in folders if export_factory(p).endswith(SEPARATOR_FACTORY_SUFFIX) == separators)


def require_export(
    name_or_path: str | Path, weights_dir: Path, what: str, expected: str, also_under: Path | None = None
) -> Path:
    """:func:`find_export`, or one clear error: ``unknown WHAT 'NAME': not a shipped name (...) and not EXPECTED``."""
    folder = find_export(name_or_path, weights_dir, also_under)
    if folder is None:
        names = ", ".join(shipped_exports(weights_dir)) or "none shipped yet"
        raise UserInputError(f"unknown {what} '{name_or_path}': not a shipped name ({names}) and not {expected}.")
    return folder


def find_export(name_or_path: str | Path, weights_dir: Path, also_under: Path | None = None) -> Path | None:
    """A shipped export by name (``weights_dir/<name>``, names have no ``/``), else an existing folder: first
    ``also_under/<name_or_path>`` when given, then the path itself. ``None`` when nothing matches."""
    text = str(name_or_path)
    shipped = weights_dir / text
    if "/" not in text and (shipped / CONFIG_NAME).is_file():
        return shipped
    for candidate in ([also_under / text] if also_under is not None else []) + [Path(text)]:
        if candidate.is_dir():
            return candidate
    return None
