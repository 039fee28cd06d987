r"""Adam for the samplers' inner loops (MGDM's potential step), without ``torch.optim``.

``torch.optim.Optimizer`` imports ``torch._dynamo`` when the first optimiser of a process is built (about a second
of a short separation's non-network time), and the samplers only need the update itself.
:class:`GroupAdam` keeps Adam's state for a few tensors, each with its own rate:

.. math:: m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad
          p \leftarrow p - \frac{\mathrm{lr}}{1 - \beta_1^k} \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^k} + \epsilon}.

On CPU and CUDA it runs the same fused kernel as ``torch.optim.Adam(fused=True)``, so the same numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor


class GroupAdam:
    """Adam state for ``params`` (tensors updated in place), each with its own learning rate."""

    def __init__(
        self,
        params: list[tuple[Tensor, float]],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = [p for p, _ in params]
        self.lrs = [float(lr) for _, lr in params]
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        # float32 step counters on the parameters' device, as torch.optim keeps them for its fused kernel
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]
        self.count = 0  # the same count on the host: the unfused path reads it without a device sync
        self.fused = all(p.device.type in ("cpu", "cuda") for p in self.params)

    @torch.no_grad()
    def step(self, grads: list[Tensor]) -> None:
        """One update of every parameter with its gradient."""
        self.count += 1
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            self.steps[i] += 1
            if self.fused:
                torch._fused_adam_(
                    [p], [g], [self.exp_avg[i]], [self.exp_avg_sq[i]], [], [self.steps[i]],
                    lr=self.lrs[i], beta1=self.beta1, beta2=self.beta2, weight_decay=0.0, eps=self.eps,
                    amsgrad=False, maximize=False,
                )  # fmt: skip
                continue
            k = float(self.count)
            self.exp_avg[i].lerp_(g, 1 - self.beta1)
            self.exp_avg_sq[i].mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            denom = (self.exp_avg_sq[i].sqrt() / (1 - self.beta2**k) ** 0.5).add_(self.eps)
            p.addcdiv_(self.exp_avg[i], denom, value=-self.lrs[i] / (1 - self.beta1**k))
