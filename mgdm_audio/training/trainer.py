r"""EDM training of any VE denoiser on any dataset, on one process or with DDP (torchrun).

The recipe names the model factory and the dataset factory as import paths (``package.module:attribute``,
restricted to ``mgdm_audio.`` modules, resolved with importlib) plus their keyword arguments, so this floor
knows no audio. The model is an ``nn.Module`` computing ``D(x, sigma)`` (``x`` of shape ``(B, ...)``,
``sigma`` of shape ``(B,)``); if it has ``loss_weight(sigma)`` that weight is used, else 1; if it has
``export_config()`` that dict is stored in the export's ``config.json``.

One optimiser step ``t`` on the global batch of ``B`` items (EDM, as MSDM trains):

.. math::  \ln \sigma_i \sim \mathcal N(P_{mean}, P_{std}^2),\quad x_i = x_{0,i} + \sigma_i n_i,\quad
           L = \frac1B \sum_i \lambda(\sigma_i)\, \mathrm{mean}\big((D(x_i, \sigma_i) - x_{0,i})^2\big).

Determinism and DDP: everything random in step ``t`` (sigmas, noise, optional per-stem gains) is drawn for
the whole global batch from a generator seeded with ``(seed, t)``, and the data order is a permutation seeded
with ``(seed, epoch)`` of which step ``t`` takes items ``[pos B, (pos + 1) B)``; rank ``r`` of ``W`` takes the
``r``-th slice of ``B / W`` items. Hence ``W`` ranks with ``B / W`` items each compute the same global mean
gradient as one rank with ``B`` items, and a resumed run (which restores model, EMA, optimiser and step)
continues with identical losses. Validation uses a fixed seeded set: for every item one sigma per band of
``ln sigma`` (uniform inside the band) and fixed noise; the EDM-weighted loss is reported per band.

``training.objective: regression`` trains a discriminative separator instead (e.g.
:mod:`mgdm_audio.audio.discriminative`): the model maps the mixture ``y_i = sum_s x_{0,i,s}`` of shape ``(B, 1, ...)``
to the stems, with the L1 waveform loss ``L = mean |f(y_i) - x_{0,i}|`` (no sigma, no noise; validation reports
that loss on the fixed set as ``l1``). Everything else (data order, gains, EMA, checkpoints, export) is shared.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import os
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from mgdm_audio.training.ema import EMA
from mgdm_audio.training.export import export_model, load_initial_weights

LOG_NAME = "log.jsonl"
OBJECTIVES = ("edm", "regression")


# --------------------------------------------------------------------------------------------- recipe


@dataclass
class FactorySpec:
    """A factory (``"mgdm_audio.pkg.module:name"`` or, from Python, a callable) and its keyword arguments."""

    factory: str | Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        factory = resolve_factory(self.factory)
        try:
            inspect.signature(factory).bind(**self.kwargs)
        except TypeError as err:  # an unknown or missing keyword argument in the recipe
            raise UserInputError(f"recipe factory '{self.describe()['factory']}': {err}; check its kwargs.") from None
        except ValueError:  # no signature to check (a builtin)
            pass
        try:
            return factory(**self.kwargs)
        except TypeError as err:  # a factory taking **kwargs passes them on (e.g. into a config dataclass)
            if "keyword argument" not in str(err):
                raise
            raise UserInputError(f"recipe factory '{self.describe()['factory']}': {err}; check its kwargs.") from None

    def describe(self) -> dict[str, Any]:
        f = self.factory
        name = f if isinstance(f, str) else f"{f.__module__}:{f.__qualname__}"
        return {"factory": name, "kwargs": self.kwargs}


def resolve_factory(factory: str | Callable[..., Any]) -> Callable[..., Any]:
    """Import ``"mgdm_audio.x.y:name"`` (no eval; only this package's modules); callables pass through."""
    if callable(factory):
        return factory
    module, _, attribute = str(factory).partition(":")
    if not module.startswith("mgdm_audio.") or not attribute.isidentifier():
        raise UserInputError(
            f"recipe factory '{factory}' must look like 'mgdm_audio.module.path:name' (only mgdm_audio modules)."
        )
    try:
        obj = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise UserInputError(f"recipe factory '{factory}' cannot be imported ({err}); check the recipe.") from None
    if not callable(obj):
        raise UserInputError(f"recipe factory '{factory}' is not callable.")
    return obj


@dataclass
class TrainSettings:
    """The ``training:`` section of a recipe (``batch_size`` is the global batch over all ranks)."""

    batch_size: int = 8
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    grad_clip: float | None = 1.0
    bf16: bool = False
    sigma_log_mean: float = -3.0
    sigma_log_std: float = 1.0
    # a fraction of each batch's sigmas drawn log-uniformly on [sigma_uniform_range] (e.g. the sampler's whole table)
    sigma_uniform_fraction: float = 0.0
    sigma_uniform_range: tuple[float, float] | None = None
    gain_augmentation_db: float = 0.0
    max_steps: int = 100_000
    max_minutes: float | None = None
    checkpoint_every: int = 500
    validate_every: int = 1000
    log_every: int = 10
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    init_from: str | None = None  # an export folder to warm-start from (relative: to the cwd, else to mgdm_audio/)
    objective: str = "edm"  # "edm" (a denoiser D(x, sigma)) or "regression" (a separator f(mix), L1 loss)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise UserInputError(f"training.objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}.")
        if not 0.0 <= self.sigma_uniform_fraction <= 1.0:
            raise UserInputError(
                f"training.sigma_uniform_fraction must be in [0, 1], got {self.sigma_uniform_fraction}."
            )
        if self.sigma_uniform_fraction > 0:
            r = self.sigma_uniform_range
            if r is None or len(r) != 2 or not 0 < float(r[0]) < float(r[1]):
                raise UserInputError(
                    f"training.sigma_uniform_range must be [sigma_lo, sigma_hi] with 0 < lo < hi, got {r}."
                )
            self.sigma_uniform_range = (float(r[0]), float(r[1]))


@dataclass
class ValidationSettings:
    """The ``validation:`` section: a dataset, how many items, and the ``ln sigma`` band edges."""

    data: FactorySpec | None = None
    items: int = 64
    batch_size: int = 8
    band_edges: tuple[float, ...] = (-7.0, -5.0, -3.0, -1.0, 3.0)
    seed: int = 1234


@dataclass
class Recipe:
    name: str
    model: FactorySpec
    data: FactorySpec
    training: TrainSettings = field(default_factory=TrainSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    metadata: dict[str, Any] = field(default_factory=dict)
    text: str = ""


def _fits(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a settings field's type (``int`` also fits ``float``; ``bool`` fits neither)."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
    return True  # other types are checked where they are used


def _type_name(hint: Any) -> str:
    text = str(hint).replace("typing.", "")
    return text[len("<class '") : -2] if text.startswith("<class '") else text


def _section(raw: Any, cls: type, where: str) -> Any:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise UserInputError(f"recipe section '{where}' must be a mapping.")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserInputError(f"recipe section '{where}' has unknown keys {unknown}; known: {sorted(known)}.")
    hints = get_type_hints(cls)
    for key, value in raw.items():
        if not _fits(value, hints[key]):
            raise UserInputError(
                f"recipe value {where}.{key} must be {_type_name(hints[key])}, got {value!r} ({type(value).__name__})."
            )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return cls(**values)


def _factory(raw: Any, where: str) -> FactorySpec:
    if not isinstance(raw, dict) or "factory" not in raw:
        raise UserInputError(f"recipe section '{where}' needs 'factory: mgdm_audio.module:name' (and 'kwargs').")
    extra = sorted(set(raw) - {"factory", "kwargs"})
    if extra:
        raise UserInputError(f"recipe section '{where}' has unknown keys {extra}.")
    return FactorySpec(str(raw["factory"]), dict(raw.get("kwargs") or {}))


def load_recipe(path: str | Path, data_root: str | None = None) -> Recipe:
    """Parse a recipe YAML; ``data_root`` replaces ``root`` in the data and validation kwargs."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"recipe {path} does not exist; pass a recipe YAML such as recipes/prior/*.yaml.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserInputError(
            f"recipe {path} is not a text file; pass a recipe YAML such as recipes/prior/*.yaml."
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UserInputError(f"recipe {path} is not valid YAML ({problem}{where}).") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"recipe {path} must be a YAML mapping.")
    unknown = sorted(set(raw) - {"name", "model", "data", "training", "validation", "export"})
    if unknown:
        raise UserInputError(f"recipe {path} has unknown sections {unknown}.")
    validation_raw = dict(raw.get("validation") or {})
    validation_data = validation_raw.pop("data", None)
    validation = _section(validation_raw, ValidationSettings, "validation")
    if validation_data is not None:
        validation.data = _factory(validation_data, "validation.data")
    recipe = Recipe(
        name=str(raw.get("name", path.stem)),
        model=_factory(raw.get("model"), "model"),
        data=_factory(raw.get("data"), "data"),
        training=_section(raw.get("training"), TrainSettings, "training"),
        validation=validation,
        metadata=dict((raw.get("export") or {}).get("metadata") or {}),
        text=text,
    )
    if data_root is not None:
        for spec in (recipe.data, recipe.validation.data):
            if spec is not None and "root" in spec.kwargs:
                spec.kwargs["root"] = str(data_root)
    return recipe


# ---------------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def init_distributed() -> DistInfo:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU) when ``WORLD_SIZE > 1``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def current_dist() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


# ------------------------------------------------------------------------------------------ training


def _seeded(*parts: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of integers (stable across runs and ranks)."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


def epoch_order(n_items: int, seed: int, epoch: int) -> Tensor:
    """The seeded permutation of the dataset's items for one epoch."""
    return torch.randperm(n_items, generator=_seeded(seed, 1, epoch))


def step_randomness(settings: TrainSettings, step: int, shape: Sequence[int]) -> tuple[Tensor, Tensor, Tensor | None]:
    """Global-batch ``(sigma (B,), noise (B, ...), gains (B, C, 1) or None)`` of step ``step``.

    ``ln sigma ~ N(sigma_log_mean, sigma_log_std^2)``; with ``sigma_uniform_fraction = f > 0`` each sigma is instead,
    with probability ``f``, log-uniform on ``sigma_uniform_range`` (drawn last, so ``f = 0`` keeps the old streams).
    """
    g = _seeded(settings.seed, 2, step)
    b = shape[0]
    sigma = torch.exp(settings.sigma_log_mean + settings.sigma_log_std * torch.randn(b, generator=g))
    noise = torch.randn(tuple(shape), generator=g)
    gains = None
    if settings.gain_augmentation_db > 0:
        db = (2 * torch.rand(b, shape[1], generator=g) - 1) * settings.gain_augmentation_db
        gains = (10 ** (db / 20)).reshape(b, shape[1], *([1] * (len(shape) - 2)))
    if settings.sigma_uniform_fraction > 0:
        assert settings.sigma_uniform_range is not None
        lo, hi = (math.log(v) for v in settings.sigma_uniform_range)
        pick = torch.rand(b, generator=g) < settings.sigma_uniform_fraction
        sigma = torch.where(pick, torch.exp(lo + (hi - lo) * torch.rand(b, generator=g)), sigma)
    return sigma, noise, gains


def data_fingerprint(spec: FactorySpec, n_items: int) -> str:
    """sha256 of the data kwargs, the dataset length and, when there is a ``root``, its file listing."""
    h = hashlib.sha256(json.dumps(spec.describe(), sort_keys=True, default=str).encode())
    h.update(str(n_items).encode())
    root = spec.kwargs.get("root")
    if root is not None and Path(root).is_dir():
        split = spec.kwargs.get("split")
        base = Path(root) / split if split and (Path(root) / split).is_dir() else Path(root)
        for p in sorted(base.rglob("*")):
            if p.is_file():
                h.update(f"{p.relative_to(base)}:{p.stat().st_size}\n".encode())
    return h.hexdigest()


@dataclass
class TrainResult:
    step: int
    losses: list[tuple[int, float]]
    validation: dict[str, float]
    stopped_by: str
    export_dir: Path | None
    run_dir: Path


def _device(settings: TrainSettings, info: DistInfo) -> torch.device:
    if settings.device == "auto":
        return torch.device(f"cuda:{info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(settings.device)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _weighted_loss(model: nn.Module, x0: Tensor, sigma: Tensor, noise: Tensor, bf16: bool) -> Tensor:
    """Per-item EDM-weighted MSE, shape ``(B,)`` (float32)."""
    x = x0 + sigma.reshape(-1, *([1] * (x0.ndim - 1))) * noise
    with torch.autocast(device_type=x0.device.type, dtype=torch.bfloat16, enabled=bf16):
        denoised = model(x, sigma)
    err = (denoised.float() - x0).pow(2).reshape(x0.shape[0], -1).mean(dim=1)
    weight_fn = getattr(_unwrap(model), "loss_weight", None)
    return err * weight_fn(sigma) if weight_fn is not None else err


def _regression_loss(model: nn.Module, x0: Tensor, bf16: bool) -> Tensor:
    """Per-item L1 waveform loss of a separator ``f(mix) -> stems`` on ``x0 (B, S, ...)``, shape ``(B,)``."""
    with torch.autocast(device_type=x0.device.type, dtype=torch.bfloat16, enabled=bf16):
        estimate = model(x0.sum(1, keepdim=True))
    return (estimate.float() - x0).abs().reshape(x0.shape[0], -1).mean(dim=1)


def _item_loss(
    model: nn.Module, x0: Tensor, sigma: Tensor, noise: Tensor, bf16: bool, objective: str = "edm"
) -> Tensor:
    """The objective's per-item loss, shape ``(B,)`` (``sigma`` and ``noise`` unused by ``regression``)."""
    if objective == "regression":
        return _regression_loss(model, x0, bf16)
    return _weighted_loss(model, x0, sigma, noise, bf16)


class Validator:
    """Fixed seeded validation set and the EDM-weighted loss per band of ``ln sigma`` (``regression``: one ``l1``)."""

    def __init__(
        self, dataset: Dataset, settings: ValidationSettings, device: torch.device, objective: str = "edm"
    ) -> None:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(0)
        n = min(settings.items, len(dataset))  # type: ignore[arg-type]
        if n < 1:
            raise UserInputError("the validation dataset is empty; check validation.data in the recipe.")
        self.x0 = torch.stack([torch.as_tensor(dataset[i], dtype=torch.float32) for i in range(n)])
        edges = settings.band_edges
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise UserInputError(f"validation.band_edges must be increasing ln-sigma values, got {edges}.")
        g = _seeded(settings.seed, 3)
        self.objective = objective
        self.bands = [f"ln_sigma[{a:g},{b:g})" for a, b in zip(edges, edges[1:], strict=False)]
        if objective == "regression":
            self.bands, edges = ["l1"], edges[:2]
        u = torch.rand(len(self.bands), n, generator=g)
        lo, hi = torch.tensor(edges[:-1]).unsqueeze(1), torch.tensor(edges[1:]).unsqueeze(1)
        self.sigmas = torch.exp(lo + (hi - lo) * u)  # (bands, n)
        self.noise = torch.randn((len(self.bands), *self.x0.shape), generator=g)
        self.batch_size = settings.batch_size
        self.device = device

    @torch.no_grad()
    def __call__(self, model: nn.Module, bf16: bool = False) -> dict[str, float]:
        was_training = model.training
        model.eval()
        out: dict[str, float] = {}
        for k, band in enumerate(self.bands):
            total = 0.0
            for i in range(0, self.x0.shape[0], self.batch_size):
                sl = slice(i, i + self.batch_size)
                x0 = self.x0[sl].to(self.device)
                sigma, noise = self.sigmas[k, sl].to(self.device), self.noise[k, sl].to(x0)
                losses = _item_loss(model, x0, sigma, noise, bf16, self.objective)
                total += float(losses.sum())
            out[band] = total / self.x0.shape[0]
        out["mean_over_bands"] = sum(out[b] for b in self.bands) / len(self.bands)
        model.train(was_training)
        return out


def _log(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / LOG_NAME, "a") as f:
        f.write(json.dumps(record) + "\n")


def train(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    max_minutes: float | None = None,
    export_dir: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume) the recipe's model into ``out_dir``; rank 0 checkpoints, validates and exports.

    Under torchrun call :func:`init_distributed` first (``python -m mgdm_audio.training`` does).
    """
    from tqdm.auto import tqdm

    s = recipe.training
    info = current_dist()
    run_dir = Path(out_dir)
    is_main = info.rank == 0
    max_steps = s.max_steps if max_steps is None else max_steps
    max_minutes = s.max_minutes if max_minutes is None else max_minutes
    if s.batch_size % info.world_size:
        raise UserInputError(
            f"training.batch_size={s.batch_size} must be divisible by the number of processes ({info.world_size})."
        )
    local_batch = s.batch_size // info.world_size
    device = _device(s, info)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume and (run_dir / CHECKPOINT_NAME).exists():
            raise UserInputError(f"{run_dir} already holds a checkpoint; pass --resume or choose another --out.")

    torch.manual_seed(s.seed)
    model: nn.Module = recipe.model.build().to(device)
    dataset = recipe.data.build()
    n_items = len(dataset)
    batches_per_epoch = n_items // s.batch_size
    if batches_per_epoch < 1:
        raise UserInputError(f"the training dataset has {n_items} items, fewer than one batch of {s.batch_size}.")
    fit_to_data = getattr(model, "fit_to_data", None)
    if callable(fit_to_data) and not resume:  # data-dependent initialisation (same on every rank: seeded)
        fit_to_data(dataset, s.seed)
    initialised_from: dict[str, Any] | None = None
    if s.init_from is not None and not resume:  # a warm start (after fit_to_data: the export's buffers win)
        initialised_from = load_initial_weights(model, resolve_init_from(s.init_from))
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr, betas=tuple(s.betas), weight_decay=s.weight_decay)
    ema = EMA(model, s.ema_decay, s.ema_warmup)
    step = 0
    validation: dict[str, float] = {}
    validation_step: int | None = None
    if resume:
        state = load_checkpoint(run_dir / CHECKPOINT_NAME)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        validation = dict(state.get("validation", {}))
        validation_step = state.get("validation_step")
        initialised_from = state.get("initialised_from")
        torch.set_rng_state(state["torch_rng"])
    fingerprint = data_fingerprint(recipe.data, n_items) if is_main else ""
    ddp_model: nn.Module = model
    if info.world_size > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    validator = None
    if is_main and recipe.validation.data is not None:
        validator = Validator(recipe.validation.data.build(), recipe.validation, device, s.objective)

    def checkpoint() -> None:
        save_checkpoint(
            run_dir / CHECKPOINT_NAME,
            {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "epoch": step // batches_per_epoch,
                "position": step % batches_per_epoch,
                "validation": validation,
                "validation_step": validation_step,
                "torch_rng": torch.get_rng_state(),
                "recipe_sha256": hashlib.sha256(recipe.text.encode()).hexdigest(),
                "world_size": info.world_size,
                "data_fingerprint": fingerprint,
                "initialised_from": initialised_from,
            },
        )

    def validate() -> None:
        nonlocal validation, validation_step
        if validator is None:
            return
        validation = validator(ema.module, s.bf16)
        validation_step = step
        _log(run_dir, {"kind": "validation", "step": step, **validation})

    if is_main and initialised_from is not None and step == 0:
        _log(run_dir, {"kind": "init", **initialised_from})

    losses: list[tuple[int, float]] = []
    start = time.monotonic()
    bar = tqdm(total=max_steps, initial=step, disable=not (is_main and progress), desc=recipe.name, unit="step")
    stopped_by = "max_steps"
    window: list[float] = []
    model.train()
    while step < max_steps:
        epoch, position = divmod(step, batches_per_epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        order = epoch_order(n_items, s.seed, epoch)
        batches = [
            order[
                b * s.batch_size + info.rank * local_batch : b * s.batch_size + (info.rank + 1) * local_batch
            ].tolist()
            for b in range(position, batches_per_epoch)
        ]
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=s.num_workers)
        stop = False
        for x0 in loader:
            x0 = torch.as_tensor(x0, dtype=torch.float32)
            sigma, noise, gains = step_randomness(s, step, (s.batch_size, *x0.shape[1:]))
            sl = slice(info.rank * local_batch, (info.rank + 1) * local_batch)
            if gains is not None:
                x0 = x0 * gains[sl]
            x0 = x0.to(device)
            loss = _item_loss(ddp_model, x0, sigma[sl].to(device), noise[sl].to(device), s.bf16, s.objective).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip or math.inf)
            optimizer.step()
            step += 1
            ema.update(model, step)
            elapsed = time.monotonic() - start
            out_of_time = max_minutes is not None and elapsed > 60 * max_minutes
            flags = torch.tensor([float(loss.detach()), float(out_of_time)], dtype=torch.float64, device=device)
            if info.world_size > 1:
                dist.all_reduce(flags)
                flags[0] /= info.world_size
            global_loss = float(flags[0])
            losses.append((step, global_loss))
            window.append(global_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{global_loss:.4f}")
            if is_main and (step % s.log_every == 0 or step == max_steps):
                _log(
                    run_dir,
                    {
                        "kind": "train",
                        "step": step,
                        "loss": sum(window) / len(window),
                        "grad_norm": float(grad_norm),
                        "seconds": round(elapsed, 3),
                        "epoch": epoch,
                    },
                )
                window = []
            if is_main and s.validate_every > 0 and step % s.validate_every == 0:
                validate()
            if is_main and s.checkpoint_every > 0 and step % s.checkpoint_every == 0:
                checkpoint()
            if step >= max_steps:
                break
            if flags[1] > 0:
                stopped_by, stop = "max_minutes", True
                break
        if stop:
            break
    bar.close()
    exported = None
    if is_main:
        if s.validate_every <= 0 or step % s.validate_every:
            validate()
        checkpoint()
        exported = Path(export_dir) if export_dir is not None else run_dir / "export"
        _export(
            recipe,
            model,
            ema.state_dict(),
            exported,
            step,
            info.world_size,
            validation,
            validation_step,
            fingerprint,
            initialised_from,
        )
        _log(run_dir, {"kind": "export", "step": step, "path": str(exported), "stopped_by": stopped_by})
    if info.world_size > 1:
        dist.barrier()
    return TrainResult(step, losses, validation, stopped_by, exported, run_dir)


def resolve_init_from(path: str) -> Path:
    """``training.init_from`` as a folder: the path itself, else relative to the installed ``mgdm_audio`` package
    (so ``audio/weights/slakh-style-small`` names a shipped export from any working directory)."""
    candidates = [Path(path)]
    if not Path(path).is_absolute():
        candidates.append(Path(__file__).resolve().parents[1] / path)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise UserInputError(f"training.init_from: no folder {path} (tried {', '.join(map(str, candidates))}).")


def _export_config(model: nn.Module) -> dict[str, Any]:
    fn = getattr(model, "export_config", None)
    return fn() if fn is not None else {}


def _export(
    recipe: Recipe,
    model: nn.Module,
    ema_state: dict[str, Tensor],
    export_dir: Path,
    step: int,
    world_size: int,
    validation: dict[str, float],
    validation_step: int | None,
    fingerprint: str | None,
    initialised_from: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the export folder (EMA weights, ``config.json``, ``MODEL_CARD.md``) of a run at ``step``
    (``training_steps`` counts this run's steps; a warm start's source is in ``initialised_from``)."""
    config = {
        "name": recipe.name,
        "model": {**recipe.model.describe(), "architecture": _export_config(model)},
        "metadata": recipe.metadata,
        "training_steps": step,
        "batch_size": recipe.training.batch_size,
        "world_size": world_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": asdict(recipe.training),
        "validation": validation,
        "validation_step": validation_step,
        "data_fingerprint": fingerprint,
    }
    if initialised_from is not None:
        config["initialised_from"] = initialised_from
    return export_model(export_dir, ema_state, config, recipe.text)


def export_checkpoint(recipe: Recipe, out_dir: str | Path, export_dir: str | Path | None = None) -> tuple[Path, int]:
    """Export a run's current ``checkpoint.pt`` without training (a snapshot of a running or stopped run).

    The checkpoint is only read (it is replaced atomically by a running trainer, so a snapshot is always a
    whole checkpoint); the export equals the one :func:`train` writes at the end when stopped at the same
    step. The validation metrics are those of the last validation before the checkpoint
    (``validation_step`` in ``config.json``; the trainer validates every ``validate_every`` steps and at the
    end). Checkpoints written by older versions lack the data fingerprint (exported as ``null``) and the
    number of processes (taken as 1). Returns ``(export folder, training step)``.
    """
    run_dir = Path(out_dir)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    stored_recipe = state.get("recipe_sha256")
    if stored_recipe is not None and stored_recipe != hashlib.sha256(recipe.text.encode()).hexdigest():
        raise UserInputError(
            f"{run_dir / CHECKPOINT_NAME} was written with another version of recipe '{recipe.name}'; "
            "export with the recipe file the run was started with."
        )
    model: nn.Module = recipe.model.build()
    try:
        model.load_state_dict(state["model"])
        ema_model = recipe.model.build()
        ema_model.load_state_dict(state["ema"])
    except (KeyError, RuntimeError) as err:
        raise UserInputError(
            f"{run_dir / CHECKPOINT_NAME} does not match the model of recipe '{recipe.name}' ({type(err).__name__})."
        ) from None
    step = int(state["step"])
    exported = Path(export_dir) if export_dir is not None else run_dir / "export"
    _export(
        recipe,
        model,
        ema_model.state_dict(),
        exported,
        step,
        int(state.get("world_size", 1)),
        dict(state.get("validation", {})),
        state.get("validation_step"),
        state.get("data_fingerprint"),
        state.get("initialised_from"),
    )
    return exported, step
