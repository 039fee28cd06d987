"""The bkse KernelWizard blur: checkpoint compatibility, the operator, and clear errors on bad files.

``tests/data/gopro_wvae_generator_keys.json`` lists every generator tensor (name and shape) of the
published ``GOPRO_wVAE`` configuration. It was produced by instantiating the *original* bkse
``KernelWizard`` class (VinAIResearch/blur-kernel-space-exploring, options/generate_blur/default.yml),
outside this repository, and dropping the ``kernel_extractor.*`` encoder keys. The same off-repo check
loaded a randomly initialised original model's ``state_dict`` through :func:`load_kernel_wizard` and
found ``adaptKernel`` and :class:`KernelWizardGenerator` equal to the last bit on 256x256 images.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mgdm_audio.cli import main
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.image.kernel_wizard import (
    KernelWizardBlur,
    KernelWizardConfig,
    KernelWizardGenerator,
    infer_kernel_wizard_config,
    load_kernel_wizard,
)
from mgdm_audio.image.operators import NonlinearBlur, make_operator
from tests.image_priors_for_tests import (
    IMAGE_SHAPE,
    SMALL_KERNEL_WIZARD,
    export_tiny_pixel_prior,
    published_style_kernel_wizard,
    random_kernel_wizard,
)

KEYS_FILE = Path(__file__).parent / "data" / "gopro_wvae_generator_keys.json"
SMALL = SMALL_KERNEL_WIZARD


def test_generator_keys_and_shapes_match_the_published_gopro_wvae_checkpoint():
    with torch.device("meta"):
        generator = KernelWizardGenerator(KernelWizardConfig())
    ours = {k: list(v.shape) for k, v in generator.state_dict().items()}
    published = json.loads(KEYS_FILE.read_text())
    assert len(published) == 145
    assert ours == published
    assert generator.kernel_shape(256, 256) == (512, 2, 2)  # the reference's k of shape (1, 512, 2, 2)


def test_infer_config_reads_sizes_from_the_tensors():
    published = {k: torch.empty(shape, device="meta") for k, shape in json.loads(KEYS_FILE.read_text()).items()}
    assert infer_kernel_wizard_config(published) == KernelWizardConfig()
    assert infer_kernel_wizard_config(random_kernel_wizard().state_dict()) == SMALL


@pytest.mark.parametrize("fmt", ["pth", "pth-dataparallel", "safetensors"])
def test_weights_load_exactly_from_each_format(fmt, tmp_path):
    generator = random_kernel_wizard()
    if fmt == "safetensors":
        path = tmp_path / "kw.safetensors"
        save_file({k: v.contiguous() for k, v in generator.state_dict().items()}, str(path))
    else:
        path = published_style_kernel_wizard(tmp_path / "kw.pth", generator, wrap=fmt == "pth-dataparallel")
    loaded = load_kernel_wizard(path)
    for name, tensor in generator.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert not any(p.requires_grad for p in loaded.parameters())
    u = torch.rand(2, 3, 128, 256, generator=torch.Generator().manual_seed(1))
    k = torch.randn(1, 32, 1, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(loaded(u, k), generator(u, k))


def test_generator_is_a_residual_blur_whose_output_depends_on_the_kernel():
    generator = random_kernel_wizard()
    u = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    k1, k2 = torch.randn(2, 1, 32, 1, 1, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out1, out2 = generator(u, k1), generator(u, k2)
    assert out1.shape == u.shape
    assert not torch.allclose(out1, out2)  # the kernel code reaches the output through the bottleneck
    assert (out1 - u).abs().mean() < 1.0  # G(u, k) = u + R(...): a perturbation of the input


def test_operator_on_grey_32px_images_is_deterministic_differentiable_and_batch_consistent(tmp_path):
    path = published_style_kernel_wizard(tmp_path / "kw.pth", random_kernel_wizard())
    op = make_operator("nonlinear_blur", (1, 32, 32), kernel_wizard=path)
    assert isinstance(op, KernelWizardBlur)
    assert op.work_hw == (128, 128) and tuple(op.kernel.shape) == (1, 32, 1, 1)
    x = (2 * torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(5)) - 1).requires_grad_(True)
    y = op(x)
    assert y.shape == (3, 1, 32, 32) and y.min() >= -1 and y.max() <= 1
    assert torch.equal(op(x), y)  # the kernel is drawn once (the reference's redraw quirk is fixed)
    assert torch.allclose(op(x[1:2]), y[1:2], atol=1e-6)
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert not torch.equal(NonlinearBlur((1, 32, 32))(x), y)  # not the stand-in


def test_redraw_kernel_reproduces_the_reference_quirk_but_repeats_from_its_seed(tmp_path):
    generator = load_kernel_wizard(published_style_kernel_wizard(tmp_path / "kw.pth", random_kernel_wizard()))
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(6)) * 2 - 1
    fixed = KernelWizardBlur((3, 128, 128), generator, kernel_seed=3)
    first = KernelWizardBlur((3, 128, 128), generator, kernel_seed=3, redraw_kernel=True)
    second = KernelWizardBlur((3, 128, 128), generator, kernel_seed=3, redraw_kernel=True)
    with torch.no_grad():
        a1, a2 = first(x), first(x)
        b1, b2 = second(x), second(x)
        assert torch.equal(fixed(x), fixed(x))
    assert not torch.equal(a1, a2)  # a new k on every call, as in the reference
    assert torch.equal(a1, b1) and torch.equal(a2, b2)  # ... from the seeded generator


class _NotATensor:
    pass


def test_bad_weight_files_give_one_clear_error(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_kernel_wizard(tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(UserInputError, match="cannot read"):
        load_kernel_wizard(tmp_path / "garbage.pth")
    with open(tmp_path / "code.pth", "wb") as handle:  # pickled objects are refused (weights_only load)
        pickle.dump({"x": _NotATensor()}, handle, protocol=2)
    with pytest.raises(UserInputError, match="cannot read"):
        load_kernel_wizard(tmp_path / "code.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(UserInputError, match="not a state dict"):
        load_kernel_wizard(tmp_path / "list.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserInputError, match="not KernelWizard weights"):
        load_kernel_wizard(tmp_path / "other.pth")
    state = random_kernel_wizard().state_dict()
    state["adapter.model.up.1.bias"] = torch.zeros(7)
    del state["recon_trunk.3.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(
        UserInputError, match=r"missing: recon_trunk\.3\.weight; wrong shape: adapter\.model\.up\.1\.bias"
    ):
        load_kernel_wizard(tmp_path / "broken.pth")


def test_geometry_errors(tmp_path):
    generator = random_kernel_wizard()
    with pytest.raises(UserInputError, match="3-channel"):
        KernelWizardBlur((2, 128, 128), generator)
    with pytest.raises(UserInputError, match="multiples of 128"):
        generator(torch.rand(1, 3, 96, 128), torch.randn(1, 32, 1, 1))
    with pytest.raises(UserInputError, match="kernel code must have shape"):
        generator(torch.rand(1, 3, 128, 128), torch.randn(1, 32, 2, 2))


def test_restore_cli_uses_the_kernel_wizard_and_rejects_it_for_other_tasks(tmp_path, capsys):
    weights = published_style_kernel_wizard(tmp_path / "kw.pth", random_kernel_wizard())
    prior = export_tiny_pixel_prior(tmp_path / "prior")
    image = tmp_path / "clean.npy"
    torch.manual_seed(0)
    np.save(image, (torch.rand(IMAGE_SHAPE) * 2 - 1).numpy())
    base = [str(image), "--prior", str(prior), "--preset", "fast", "--degrade", "--json"]
    code = main(
        ["restore", *base, "--task", "nonlinear_blur", "--kernel-wizard", str(weights), "-o", str(tmp_path / "a.png")]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["task"] == "nonlinear_blur"
    code = main(["restore", *base, "--task", "blur", "--kernel-wizard", str(weights), "-o", str(tmp_path / "b.png")])
    assert code != 0 and "nonlinear_blur only" in capsys.readouterr().err
    assert not (tmp_path / "b.png").exists()
