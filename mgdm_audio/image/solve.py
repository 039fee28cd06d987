"""One mechanism for every image restoration run (the restore CLI and the image benchmark use it).

``measure(operator, clean, sigma_y, seed)`` makes a measurement ``y = A(x) + sigma_y z`` (as the MGDM reference
code: the noise is added after the operator, for every task, ``sigma_y = 0.05``), and
``solve(prior, operator, y, sampler, preset, n_samples, seed)`` runs a registered sampler on the prior's
space and returns images: ``n_samples`` posterior samples for each measurement, as ``(N, K, C, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.operators import Operator
from mgdm_audio.core.rng import make_generator
from mgdm_audio.image.priors import ImagePrior
from mgdm_audio.samplers.base import Callback
from mgdm_audio.samplers.run import PosteriorRun, RunSpec, resolve, run_posterior

SIGMA_Y = 0.05


@dataclass
class Restoration:
    """Images ``(N, K, C, H, W)`` in ``[-1, 1]`` (K posterior samples per measurement) and their cost."""

    samples: Tensor
    nfe: int
    vjp: int
    seconds: float
    sampler: str
    preset: str
    sampler_preset: str  # the sampler's own preset that ran (e.g. `default` -> `image` or `image-latent`)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> Tensor:
        return self.samples.mean(dim=1)

    @property
    def spread(self) -> Tensor:
        """Per-pixel standard deviation over the K samples (zeros when K = 1)."""
        k = self.samples.shape[1]
        return self.samples.std(dim=1, unbiased=True) if k > 1 else torch.zeros_like(self.samples[:, 0])


def measure(operator: Operator, clean: Tensor, sigma_y: float = SIGMA_Y, seed: int = 0) -> Tensor:
    """``y = A(x) + sigma_y z`` with ``z`` drawn from a generator seeded with ``seed``."""
    with torch.no_grad():
        ax = operator(clean)
    z = torch.randn(ax.shape, generator=make_generator(seed), dtype=ax.dtype).to(ax.device)
    return ax + sigma_y * z


def image_modality(prior_kind: str = "pixel") -> str:
    """The preset aliases of a prior kind: ``default`` is each sampler's ``image`` preset (its point chosen on
    validation images with the pixel prior), and on a latent prior its ``image-latent`` preset where it has one."""
    return "image-latent" if prior_kind == "latent" else "image"


def sampler_preset(preset: str, sampler: str, prior_kind: str = "pixel") -> str:
    """The sampler's own preset name for a CLI preset (``fast``, ``default``, ``paper``) or a sampler preset name."""
    return resolve(RunSpec(sampler, preset), image_modality(prior_kind)).sampler_preset


def image_run(sampler: str, preset: str, overrides: dict[str, Any], prior_kind: str = "pixel") -> PosteriorRun:
    """A sampler at a CLI or sampler preset with overrides, resolved for images (start ``x_T = x_init``)."""
    return resolve(RunSpec(sampler, preset, tuple(sorted(overrides.items()))), image_modality(prior_kind))


def solve(
    prior: ImagePrior,
    operator: Operator,
    y: Tensor,
    sampler: str = "mgdm",
    preset: str = "fast",
    n_samples: int = 1,
    seed: int = 0,
    sigma_y: float = SIGMA_Y,
    callback: Callback | None = None,
    **overrides: Any,
) -> Restoration:
    """Posterior samples of ``x | y`` for each of the ``N`` measurements in ``y`` (``(N, *A(x).shape[1:])``).

    All ``N K`` chains run as one batch; chain ``k`` of measurement ``n`` is row ``n K + k``. Raises
    :class:`UserInputError` before any work when the sampler cannot handle the operator (e.g. no SVD).
    """
    if n_samples < 1:
        raise UserInputError(f"n_samples must be at least 1, got {n_samples}.")
    run = image_run(sampler, preset, overrides, prior.kind)
    n = y.shape[0]
    y_rep = y.repeat_interleave(n_samples, dim=0)
    problem = prior.problem(operator, y_rep, sigma_y)
    run.check(problem)
    generator = make_generator(seed, y.device)
    result = run_posterior(prior, problem, run, n * n_samples, generator, callback, x_shape=prior.sample_shape)
    with torch.no_grad():
        images = prior.to_image(result.samples)
    return Restoration(
        samples=images.reshape(n, n_samples, *images.shape[1:]),
        nfe=result.nfe,
        vjp=result.vjp,
        seconds=result.seconds,
        sampler=sampler,
        preset=preset,
        sampler_preset=run.sampler_preset,
        info=result.info,
    )


def sampler_applicable(
    sampler: str, operator: Operator, prior: ImagePrior, preset: str = "default", **overrides: Any
) -> str | None:
    """``None`` if ``sampler`` (with ``preset`` and ``overrides``) can run this task on this prior, else the
    reason it cannot (the benchmark's "n/a" cells). A config may relax a requirement (e.g. ΠGDM with
    ``pseudo_inverse="identity"`` needs no SVD)."""
    run = image_run(sampler, preset, overrides, prior.kind)
    dummy_y = torch.zeros(1)  # only the operator's type and SVD pieces are looked at
    try:
        problem = prior.problem(operator, dummy_y, SIGMA_Y)
        run.check(problem)
    except UserInputError as err:
        return str(err)
    return None
