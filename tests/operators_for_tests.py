"""Small operators and checks shared by the sampler tests."""

from collections.abc import Callable

import torch

from mgdm_audio.core.gmm import GaussianMixture
from mgdm_audio.core.likelihood import InverseProblem
from mgdm_audio.core.operators import LinearOperator, MatrixOperator, Operator
from mgdm_audio.core.rng import make_generator
from mgdm_audio.metrics.sliced_wasserstein import sliced_wasserstein
from mgdm_audio.samplers.base import SamplerResult


class NoSVDMatrix(LinearOperator):
    """A dense linear operator that offers no SVD pieces (exercises the gradient fallbacks)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.matrix = matrix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix.T.to(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y @ self.matrix.to(y)


class Cubic(Operator):
    """A non-linear operator ``A(x) = W x + 0.1 (W x)^3``."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.matrix = matrix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x @ self.matrix.T.to(x)
        return z + 0.1 * z**3


def sw_to_posterior_and_prior_sw(
    run: Callable[..., SamplerResult], seed: int = 3, n: int = 300, **kwargs: object
) -> tuple[float, float]:
    """The shared posterior sanity check: a seeded 25-component mixture in d = 8 observed through
    ``a = (0.1, 0.49, ...)`` with sigma_y = 0.1; returns the sampler's SW to exact posterior samples and
    the SW of prior samples (the same directions), for ``run(prior, problem, x_init, generator=, **kwargs)``."""
    d = 8
    g = make_generator(seed)
    mix = GaussianMixture.grid25(d, g)
    a = torch.tensor([[0.1, 0.49] * 4], dtype=torch.float64)
    y = mix.sample(1, g) @ a.T + 0.1 * torch.randn(1, 1, generator=g, dtype=torch.float64)
    ref = mix.posterior(a, y, 0.1).sample(n, g)
    problem = InverseProblem(MatrixOperator(a.float()), y.float(), 0.1)
    x_init = torch.randn(n, d, generator=make_generator(seed))
    res = run(mix.denoiser(), problem, x_init, generator=make_generator(seed + 1), **kwargs)
    sw = sliced_wasserstein(res.samples, ref, generator=make_generator(1))
    sw_prior = sliced_wasserstein(mix.sample(n, g), ref, generator=make_generator(1))
    return sw, sw_prior
