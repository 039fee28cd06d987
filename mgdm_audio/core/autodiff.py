r"""Vector-Jacobian products for the samplers' likelihood steps.

``vjp(f(x), x, v) = J_f(x)^T v`` is computed as the gradient of the scalar ``<f(x), v>`` (a ``dot`` of the
flattened tensors), not as ``torch.autograd.grad(f(x), x, grad_outputs=v)``. The numbers are the same (the
backward of the dot hands ``1 * v = v`` to ``f``'s graph), but torch checks a tensor ``grad_outputs`` with its
symbolic-shape helpers, and their first use in a process imports ``sympy`` (a large part of a short separation's
sampler time outside the network). The dot costs two elementwise passes per product.
"""

from __future__ import annotations

import torch
from torch import Tensor


def vjp(output: Tensor, x: Tensor, cotangent: Tensor, scale: float = 1.0) -> Tensor:
    """``scale J^T v`` for ``output = f(x)`` (``x`` requires grad) and a ``cotangent`` ``v`` that broadcasts to
    ``output``'s shape. ``scale`` multiplies the scalar, so it costs nothing: the backward of the dot multiplies
    ``v`` by the incoming scalar gradient anyway (``scale * v``, exactly ``v`` for ``scale = 1``)."""
    if cotangent.shape != output.shape:
        cotangent = cotangent.expand_as(output)
    inner = torch.dot(output.reshape(-1), cotangent.detach().reshape(-1).to(output.dtype))
    if scale != 1.0:
        inner = inner * scale
    (grad,) = torch.autograd.grad(inner, x)
    return grad
