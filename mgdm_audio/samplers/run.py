"""The posterior-run layer: what every job (separate, restore, generate, the benchmarks) does to run a sampler.

A job names a run as a :class:`RunSpec`, written on the command line in one syntax (:func:`parse_run_spec`)::

    [LABEL=]sampler[:preset[:key=value[:key=value...]]]       e.g.  mgdm-R2=mgdm:fast:n_reps=2

:func:`resolve` turns it into a :class:`PosteriorRun` for a modality: the job-level preset names (``fast``,
``default``, ``paper``) map to the sampler's own presets through the one table :data:`MODALITIES`, the overrides
are applied to the preset's config, and the starting-noise convention (``start_scale``) is the modality's unless
the spec overrides it. :func:`run_posterior` then draws the starting noise and runs the sampler:

    x_init ~ N(0, I) of shape (n_chains, *x_shape),   samples = sampler(prior, problem, x_init)

The starting-noise scale is a property of the run, not of a sampler's config: ``unit`` starts a VP sampler at
``x_T = x_init`` (the reference's image convention), ``vp`` at ``x_T = sqrt(1 - abar_T) x_init`` (its audio
convention); samplers read it from the counting prior they are given (``prior.start_scale``).

A warm start (``warm``, :class:`~mgdm_audio.samplers.base.WarmStart`: an estimate ``x_hat`` and a level ``S``; SDEdit,
MSDM's "Demucs + Gibbs") replaces the cold start for the samplers that declare ``warm_start`` (all the built-in
ones): they start from ``x_hat`` noised with ``x_init`` to the first level of their schedule at or below ``S`` and run
only the rest of the schedule. Three read "noised" in their own terms: DDRM draws its spectral state from its
variational ``q(x_t | x_0 = x_hat, y)`` at that level, per singular value; RED-diff starts its optimised point at
``x_hat`` itself (its noise is drawn afresh at each level) and PnP-DM its split-Gibbs chain at ``x = x_hat`` with the
couplings ``rho_k`` at or below ``S`` (its likelihood step adds the noise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

import torch

from mgdm_audio.core.denoiser import Denoiser
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.samplers.base import Callback, SamplerResult, SamplerSpec, StartScale, WarmStart
from mgdm_audio.samplers.registry import get_sampler, sampler_names

START_SCALE_KEY = "start_scale"
"""The one override a run spec may carry that is not a sampler setting: the starting-noise convention."""


@dataclass(frozen=True)
class Modality:
    """Per-modality defaults: job preset name -> the sampler presets tried in order (the first one the sampler has
    is used, else its ``default`` config), and the starting-noise convention."""

    aliases: Mapping[str, tuple[str, ...]]
    start_scale: StartScale = "unit"


MODALITIES: dict[str, Modality] = {
    "audio": Modality(
        {
            "fast": ("audio-fast", "fast"),
            "default": ("audio", "fast"),
            "paper": ("paper-audio",),
            "tuned": ("audio-tuned", "audio-fast", "fast"),
        },
        "vp",
    ),
    "image": Modality({"fast": ("fast",), "default": ("image", "fast"), "paper": ("paper-image",)}, "unit"),
    # A latent prior: its own validation choice where it differs from the pixel prior's (`image-latent`).
    "image-latent": Modality(
        {"fast": ("fast",), "default": ("image-latent", "image", "fast"), "paper": ("paper-image",)}, "unit"
    ),
    "plain": Modality({}, "unit"),  # sampler presets by their own names (the GMM benchmark, generate)
}


@dataclass(frozen=True)
class RunSpec:
    """A sampler at a preset with config overrides, and a label (``name``: the label, else the sampler's name)."""

    sampler: str
    preset: str = "default"
    overrides: tuple[tuple[str, Any], ...] = ()
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.sampler

    @property
    def overrides_dict(self) -> dict[str, Any]:
        return dict(self.overrides)


def parse_override_value(text: str) -> Any:
    """A config override from the command line: ``1`` -> int, ``0.5`` / ``1e-3`` -> float, ``true``/``false`` ->
    bool, ``none`` -> None, anything else stays a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_run_spec(item: str, preset: str = "default", flag: str = "--samplers") -> RunSpec:
    """One ``[LABEL=]sampler[:preset[:key=value...]]`` entry (``preset`` when the entry names none).

    The label is ``LABEL`` when given, else the sampler alone, else the whole entry (``dps:paper``).

    >>> parse_run_spec("mgdm-R2=mgdm:fast:n_reps=2")
    RunSpec(sampler='mgdm', preset='fast', overrides=(('n_reps', 2),), label='mgdm-R2')
    """
    text = item.strip()
    label, eq, body = text.partition("=")
    if not eq or ":" in label:  # no label: the first '=' belongs to an override
        label, body = "", text
    elif not label.strip():
        body = ""  # '=sampler': an empty label
    fields = [f.strip() for f in body.split(":")]
    if not fields[0]:
        raise UserInputError(f"{flag} entry {item!r} is not [NAME=]sampler[:preset[:key=value...]] (e.g. dps:fast).")
    overrides = []
    for pair in fields[2:]:
        key, has_eq, value = pair.partition("=")
        if not has_eq or not key.strip():
            raise UserInputError(f"{flag} entry {item!r}: override {pair!r} is not key=value (e.g. n_steps=50).")
        overrides.append((key.strip(), parse_override_value(value.strip())))
    run_preset = fields[1] if len(fields) > 1 and fields[1] else preset
    name = label.strip() or (fields[0] if len(fields) == 1 else body)
    return RunSpec(fields[0], run_preset, tuple(sorted(overrides)), name)


def parse_run_specs(text: str, preset: str = "default", flag: str = "--samplers") -> list[RunSpec]:
    """Comma-separated :func:`parse_run_spec` entries; labels must be unique."""
    runs = [parse_run_spec(part, preset, flag) for part in text.split(",") if part.strip()]
    check_unique(runs, flag)
    return runs


def check_unique(runs: Sequence[RunSpec], what: str) -> None:
    names = [r.name for r in runs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserInputError(f"{what} names must be unique; repeated: {', '.join(repeated)}.")


def sampler_preset(spec: SamplerSpec, preset: str, modality: str = "plain") -> str:
    """The sampler's own preset for a job preset of ``modality`` (an alias wins over a same-named sampler preset)."""
    aliases = MODALITIES[modality].aliases
    if preset not in aliases:
        return preset
    return next((name for name in aliases[preset] if name in spec.presets), "default")


@dataclass(frozen=True)
class PosteriorRun:
    """A resolved run: the registered sampler, the preset it resolved to, its config and the start convention."""

    spec: RunSpec
    sampler: SamplerSpec
    sampler_preset: str
    config: Any
    start_scale: StartScale

    @property
    def extra_observations(self) -> bool:
        """Whether the sampler accepts extra linear observations (e.g. neighbour conditioning of audio chunks)."""
        return self.sampler.extra_observations

    def key(self) -> dict[str, Any]:
        """Every value of the run that changes a number (JSON): the sampler, its resolved config, the start."""
        values = asdict(self.config) if is_dataclass(self.config) else dict(vars(self.config))
        return {"sampler": self.sampler.name, "config": values, START_SCALE_KEY: self.start_scale}

    def check(self, problem: InverseProblem | None) -> None:
        self.sampler.check(problem, self.config)


def resolve(spec: RunSpec, modality: str = "plain") -> PosteriorRun:
    """Look the sampler up, resolve the preset, apply the overrides (one clear error for any unknown name)."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}")  # a caller's bug, not a user's mistake
    sampler = get_sampler(spec.sampler)
    aliases = MODALITIES[modality].aliases
    if spec.preset not in aliases and spec.preset != "default" and spec.preset not in sampler.presets:
        known = list(dict.fromkeys([*aliases, "default", *sampler.presets]))
        raise UserInputError(
            f"sampler '{sampler.name}' has no preset '{spec.preset}'; choose one of: {', '.join(known)}."
        )
    overrides = spec.overrides_dict
    start = overrides.pop(START_SCALE_KEY, MODALITIES[modality].start_scale)
    if start not in ("unit", "vp"):
        raise UserInputError(f"{START_SCALE_KEY} must be 'unit' or 'vp', got {start!r}.")
    preset = sampler_preset(sampler, spec.preset, modality)
    return PosteriorRun(spec, sampler, preset, sampler.config(preset, **overrides), start)


def run_posterior(
    prior: Denoiser,
    problem: InverseProblem | None,
    run: PosteriorRun,
    n_chains: int,
    seed: int | torch.Generator,
    callback: Callback | None = None,
    *,
    x_shape: Sequence[int],
    device: torch.device | str | None = None,
    init: torch.Generator | None = None,
    warm: WarmStart | None = None,
) -> SamplerResult:
    """``n_chains`` chains of ``run`` on ``problem`` (``None``: unconditional) under ``prior``.

    ``seed`` seeds the sampler's generator on ``device`` (or is that generator, carried across calls). The
    starting noise ``(n_chains, *x_shape)`` is drawn from ``init`` (default: the sampler's generator) on that
    generator's device and moved to ``device``. ``warm`` starts the chains from an estimate (module docstring).
    """
    if n_chains < 1:
        raise UserInputError(f"the number of chains must be at least 1, got {n_chains}.")
    if warm is not None and not run.sampler.warm_start:
        raise UserInputError(
            f"sampler '{run.sampler.name}' has no warm start; use one of: {', '.join(warm_samplers())}."
        )
    if isinstance(seed, torch.Generator):
        generator = seed
    else:
        generator = torch.Generator(device=device or "cpu")
        generator.manual_seed(int(seed))
    source = generator if init is None else init
    x_init = torch.randn((n_chains, *x_shape), generator=source, device=source.device)
    if device is not None:
        x_init = x_init.to(device)
    return run.sampler.run(
        prior,
        problem,
        x_init,
        generator=generator,
        config=run.config,
        callback=callback,
        start_scale=run.start_scale,
        warm=warm,
    )


def warm_samplers() -> list[str]:
    """The registered samplers that can be warm-started."""
    return [name for name in sampler_names() if get_sampler(name).warm_start]
