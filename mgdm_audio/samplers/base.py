"""What every sampler shares: the call signature, the result with its cost, and the step rules.

Every sampler is a callable with the signature of :meth:`SamplerFn.__call__`::

    run(prior, problem, x_init, *, generator=None, config=None, callback=None, start_scale="unit") -> SamplerResult

``x_init`` is standard normal noise of the output's shape ``(B, *x_shape)``; each sampler scales
it to its starting state, following ``start_scale`` (the run's convention, :data:`StartScale`).
``problem`` is ``None`` only for unconditional sampling. The
:func:`sampler` decorator wraps the algorithm with input checks, a counting denoiser (NFE and VJP)
and a wall clock, so that the algorithms themselves stay pure.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import torch
from torch import Tensor

from mgdm_audio.core.denoiser import CountingDenoiser, Denoiser
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import LinearOperator, SVDPieces

Callback = Callable[[dict[str, Any]], None]
StartScale = Literal["unit", "vp"]
"""The starting-noise convention of a run (:mod:`mgdm_audio.samplers.run`): ``x_T = x_init`` or
``x_T = sqrt(1 - abar_T) x_init``; the counting prior a sampler receives carries it as ``prior.start_scale``."""


@dataclass
class SamplerResult:
    """Samples ``(B, *x_shape)`` and what they cost: NFE and VJP per chain batch, wall seconds."""

    samples: Tensor
    nfe: int
    vjp: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


AlgorithmFn = Callable[
    [CountingDenoiser, InverseProblem | None, Tensor, torch.Generator | None, Any, Callback | None, dict[str, Any]],
    Tensor,
]


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: its function, config class, named presets and requirements."""

    name: str
    run: SamplerFn
    config_cls: type
    presets: Mapping[str, Mapping[str, Any]]
    needs_problem: bool = True
    needs_linear: bool = False
    needs_svd: bool = False
    summary: str = ""
    problem_check: Callable[[InverseProblem], None] | None = None
    """An extra requirement on the problem (e.g. MSDM: the operator sums the sources), raising UserInputError."""
    extra_observations: bool = True
    """Whether the sampler accepts extra linear observations beside the job's own (e.g. an audio chunk conditioned
    on its neighbours' separated overlaps): any linear operator, not only the job's."""
    warm_start: bool = False
    """Whether the sampler can start from an estimate at an intermediate noise level (:class:`WarmStart`)."""

    def config(self, preset: str = "default", **overrides: Any) -> Any:
        """The config of ``preset`` with ``overrides`` applied (unknown names are an error)."""
        if preset != "default" and preset not in self.presets:
            raise UserInputError(
                f"sampler '{self.name}' has no preset '{preset}'; choose one of: "
                f"{', '.join(['default', *self.presets])}."
            )
        values = {**self.presets.get(preset, {}), **overrides}
        known = {f.name for f in fields(self.config_cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserInputError(
                f"sampler '{self.name}' has no setting {', '.join(unknown)}; known: {', '.join(sorted(known))}."
            )
        return replace(self.config_cls(), **values)

    def check(self, problem: InverseProblem | None, config: Any = None) -> None:
        """One clear error when the sampler cannot handle the problem (before any work starts).

        A config may relax or tighten the SVD requirement through a ``needs_svd`` attribute (e.g.
        ΠGDM with ``pseudo_inverse="identity"``, preconditioned VML-MAP)."""
        needs_svd = bool(getattr(config, "needs_svd", self.needs_svd))
        if problem is None:
            if self.needs_problem:
                raise UserInputError(f"sampler '{self.name}' needs an inverse problem (operator and observation).")
            return
        if self.needs_linear and not isinstance(problem.operator, LinearOperator):
            raise UserInputError(
                f"sampler '{self.name}' needs a linear operator; {type(problem.operator).__name__} is not."
            )
        if needs_svd:
            require_svd(problem, f"sampler '{self.name}'")
        if self.problem_check is not None:
            self.problem_check(problem)


def require_svd(problem: InverseProblem, who: str, fix: str = "") -> SVDPieces:
    """The operator's SVD pieces, or one clear error naming the sampler (``who``) and what to change (``fix``)."""
    pieces = problem.operator.svd() if isinstance(problem.operator, LinearOperator) else None
    if pieces is None:
        raise UserInputError(
            f"{who} needs the operator's SVD pieces, which {type(problem.operator).__name__} does not provide"
            + (f"; {fix}." if fix else ".")
        )
    return pieces


class SamplerFn:
    """A registered sampler's function: an algorithm ``fn(prior, problem, x_init, generator, config, callback,
    info) -> samples`` wrapped with the input checks, the counting denoiser (NFE, VJP, the run's start convention)
    and a wall clock (made by :func:`sampler`)."""

    def __init__(self, fn: AlgorithmFn, config_cls: type, needs_problem: bool = True) -> None:
        functools.update_wrapper(self, fn)
        self.fn, self.config_cls, self.needs_problem = fn, config_cls, needs_problem

    def __call__(
        self,
        prior: Denoiser,
        problem: InverseProblem | None,
        x_init: Tensor,
        *,
        generator: torch.Generator | None = None,
        config: Any = None,
        callback: Callback | None = None,
        start_scale: StartScale = "unit",
        warm: WarmStart | None = None,
    ) -> SamplerResult:
        name, config = self.fn.__name__, self.config_cls() if config is None else config
        if start_scale not in ("unit", "vp"):
            raise UserInputError(f"start_scale must be 'unit' or 'vp', got {start_scale!r}.")
        if not isinstance(config, self.config_cls):
            raise UserInputError(f"{name} expects a {self.config_cls.__name__}, got {type(config).__name__}.")
        if not isinstance(x_init, Tensor) or x_init.ndim < 2:
            raise UserInputError("x_init must be a tensor of shape (B, *x_shape) with a batch dimension.")
        if not torch.all(torch.isfinite(x_init)):
            raise UserInputError("x_init contains NaN or infinite values.")
        if problem is not None:
            problem.check_shape(x_init)
        elif self.needs_problem:
            raise UserInputError(f"sampler '{name}' needs an inverse problem (operator and observation).")
        counter = CountingDenoiser(prior, unit_batch=x_init.shape[0], start_scale=start_scale)
        if warm is not None:
            warm.check(x_init)
            counter.warm = warm  # read by warm_cut, vp_start and ve_start below
        info: dict[str, Any] = {}
        start = time.perf_counter()
        samples = self.fn(counter, problem, x_init, generator, config, callback, info)
        return SamplerResult(samples.detach(), counter.nfe, counter.vjp, time.perf_counter() - start, info)


def sampler(config_cls: type, needs_problem: bool = True) -> Callable[[AlgorithmFn], SamplerFn]:
    """Wrap an algorithm ``fn(prior, problem, x_init, generator, config, callback, info) -> samples``."""
    return lambda fn: SamplerFn(fn, config_cls, needs_problem)


@dataclass(frozen=True)
class WarmStart:
    r"""An SDEdit-style start (Meng et al. 2022; MSDM's "Demucs + Gibbs"): an estimate ``x_hat`` of the output
    ``(B or 1, *x_shape)`` and a noise level ``sigma`` (VE units, ``x = x_0 + sigma n``).

    A sampler whose schedule visits the levels :math:`\sigma_0 > \sigma_1 > \dots` skips the leading levels above
    ``sigma`` (:func:`warm_cut`: ``c`` levels, never the smallest positive one) and starts at
    :math:`x = \hat x + \sigma_c n` (VE) or :math:`\sqrt{\bar\alpha_c}\,\hat x + \sqrt{1 - \bar\alpha_c}\, n` (VP),
    ``n`` the run's ``x_init``; the rest of its schedule (and its step rules, by their position in the full
    schedule) is unchanged, so NFE counts only the levels run. ``sigma`` at or above the top level gives the cold
    schedule's length.
    """

    estimate: Tensor
    sigma: float

    def like(self, x_init: Tensor) -> Tensor:
        """The estimate on ``x_init``'s device and dtype, broadcast to its chains (a view: clone it to write)."""
        return self.estimate.to(x_init).expand_as(x_init)

    def check(self, x_init: Tensor) -> None:
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise UserInputError(f"the warm start's noise level must be a positive number, got {self.sigma}.")
        est = self.estimate
        if est.ndim != x_init.ndim or est.shape[1:] != x_init.shape[1:] or est.shape[0] not in (1, x_init.shape[0]):
            raise UserInputError(
                f"the warm start's estimate has shape {tuple(est.shape)}; the run needs (1 or "
                f"{x_init.shape[0]}, {', '.join(map(str, x_init.shape[1:]))})."
            )


def warm_cut(prior: CountingDenoiser, sigmas: Sequence[float]) -> int:
    """How many leading levels of a decreasing schedule ``sigmas`` a warm start skips: those above its ``sigma``,
    but never the last positive level (0 for a cold start)."""
    warm: WarmStart | None = prior.warm
    if warm is None:
        return 0
    last = max(i for i, s in enumerate(sigmas) if s > 0)
    return min(next((i for i, s in enumerate(sigmas) if s <= warm.sigma), last), last)


def vp_schedule(prior: CountingDenoiser, n_steps: int) -> tuple[Tensor, int]:
    """The grid ``ts = prior.levels.timesteps(n_steps)`` (increasing VP indices, visited from the last) and the
    number of its largest indices a warm start skips (:func:`warm_cut`; 0 cold)."""
    ts = prior.levels.timesteps(n_steps)
    return ts, warm_cut(prior, prior.levels.sigmas[ts.flip(0)].tolist())


def vp_start(prior: CountingDenoiser, x_init: Tensor, abar_start: Tensor) -> Tensor:
    """The VP starting state at ``abar_start``: cold, ``x_init`` (``unit``) or ``sqrt(1 - abar) x_init`` (``vp``, the
    audio reference); warm, ``sqrt(abar) x_hat + sqrt(1 - abar) x_init`` (:class:`WarmStart`)."""
    warm: WarmStart | None = prior.warm
    noise_scale = float((1 - abar_start).sqrt())
    if warm is None:
        return x_init if prior.start_scale == "unit" else x_init * noise_scale
    return warm.estimate.to(x_init) * float(abar_start.sqrt()) + x_init * noise_scale


def ve_start(prior: CountingDenoiser, x_init: Tensor, sigma: float) -> Tensor:
    """The VE starting state at ``sigma``: ``sigma x_init`` cold, ``x_hat + sigma x_init`` warm."""
    warm: WarmStart | None = prior.warm
    return sigma * x_init if warm is None else warm.estimate.to(x_init) + sigma * x_init


@dataclass(frozen=True)
class StepRule:
    """One rule of a step schedule: ``value`` applies at outer index ``i`` when every given
    condition holds (MGDM's ``[(condition, value), ..., ("default", value)]`` lists, as data).

    ``from_end=m``: ``i >= n_steps - m``; ``i_max=m``: ``i <= m``; ``i_min=m``: ``i >= m``;
    ``every=m``: ``i % m == 0``. ``n_steps`` is the grid length N (not N - 3), as in the reference.
    """

    value: float
    from_end: int | None = None
    i_min: int | None = None
    i_max: int | None = None
    every: int | None = None

    def matches(self, i: int, n_steps: int) -> bool:
        return (
            (self.from_end is None or i >= n_steps - self.from_end)
            and (self.i_min is None or i >= self.i_min)
            and (self.i_max is None or i <= self.i_max)
            and (self.every is None or i % self.every == 0)
        )


def schedule_value(rules: Sequence[StepRule | Mapping[str, Any]], default: float, i: int, n_steps: int) -> float:
    """The value of the first matching rule, else ``default`` (rules may be dicts from YAML)."""
    for rule in rules:
        r = rule if isinstance(rule, StepRule) else StepRule(**rule)
        if r.matches(i, n_steps):
            return r.value
    return default


def notify(callback: Callback | None, **state: Any) -> None:
    """Call the progress callback, if any, with the step state (``i``, ``total``, ``x``, ...)."""
    if callback is not None:
        callback(state)
