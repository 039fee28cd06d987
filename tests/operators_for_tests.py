"""Small operators shared by the sampler tests."""

import torch

from mgdm_audio.core.operators import LinearOperator, Operator


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
