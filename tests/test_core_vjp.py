"""Vector-Jacobian products for the samplers (core.autodiff)."""

import subprocess
import sys

import pytest
import torch

from mgdm_audio.core.autodiff import vjp
from mgdm_audio.core.rng import make_generator


def test_vjp_equals_autograd_with_grad_outputs():
    g = make_generator(0)
    x = torch.randn(3, 4, 16, generator=g).requires_grad_(True)
    v = torch.randn(3, 4, 16, generator=g)

    def f(z):
        return torch.tanh(z) * z.flip(-1) + z.sum(1, keepdim=True)

    (want,) = torch.autograd.grad(f(x), x, grad_outputs=v)
    assert torch.equal(vjp(f(x), x, v), want)
    torch.testing.assert_close(vjp(f(x), x, v, scale=-0.25), -0.25 * want)
    # a cotangent that broadcasts (one channel) is expanded
    v1 = v[:, :1]
    (want1,) = torch.autograd.grad(f(x), x, grad_outputs=v1.expand(3, 4, 16))
    assert torch.equal(vjp(f(x), x, v1), want1)


def test_vjp_does_not_import_sympy():
    # torch.autograd.grad with a tensor grad_outputs imports sympy on first use (0.5 s); vjp must not
    code = (
        "import sys, torch\n"
        "if 'sympy' in sys.modules: sys.exit(3)\n"
        "from mgdm_audio.core.autodiff import vjp\n"
        "x = torch.randn(2, 5, requires_grad=True)\n"
        "vjp(torch.sin(x), x, torch.ones(2, 5))\n"
        "sys.exit(1 if 'sympy' in sys.modules else 0)\n"
    )
    rc = subprocess.run([sys.executable, "-c", code], check=False).returncode
    if rc == 3:
        pytest.skip("this torch imports sympy on import")
    assert rc == 0


def test_pullback_of_the_likelihood_gradient_equals_the_chain_rule():
    """``pullback_grad_log_likelihood(f(x), x, scale) = scale J_f(x)^T A^T (y - A f(x)) / sigma_y^2``."""
    from mgdm_audio.core.likelihood import InverseProblem
    from mgdm_audio.core.operators import MatrixOperator

    g = make_generator(1)
    a = torch.randn(2, 5, generator=g, dtype=torch.float64)
    problem = InverseProblem(MatrixOperator(a), torch.randn(1, 2, generator=g, dtype=torch.float64), 0.3)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    x0 = torch.tanh(x) * 2.0
    want = -0.5 * (1 - torch.tanh(x.detach()) ** 2) * 2.0 * problem.grad_log_likelihood(x0.detach())
    torch.testing.assert_close(problem.pullback_grad_log_likelihood(x0, x, scale=-0.5), want)
