"""Image priors: model shapes and preconditioning, IDX reader, export/load round trips, latent composition."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mgdm_audio.core.edm import edm_coefficients
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.image.data import FashionMNIST, load_fashion_mnist, read_idx
from mgdm_audio.image.model import build_autoencoder, build_image_prior
from mgdm_audio.image.operators import make_operator
from mgdm_audio.image.priors import DecodedOperator, load_image_prior
from mgdm_audio.image.solve import measure, sampler_applicable, solve
from tests.image_priors_for_tests import IMAGE_SHAPE, export_tiny_latent_prior, export_tiny_pixel_prior


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion_root(root: Path, n_train: int = 12, n_test: int = 5) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


def test_edm_prior_is_identity_at_small_sigma_and_zero_net_gives_skip() -> None:
    torch.manual_seed(0)
    prior = build_image_prior("tiny")  # the output conv is zero-initialised: F = 0
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    sigma = torch.tensor([0.01, 0.5, 3.0])
    c_skip, _, _, _ = edm_coefficients(sigma, 0.5)
    expected = (c_skip.reshape(-1, 1, 1, 1) * x).clamp(-1, 1)
    torch.testing.assert_close(prior(x, sigma), expected)


def test_edm_forward_matches_the_karras_formula_with_a_stub_network() -> None:
    prior = build_image_prior("tiny", edm={"clamp_output": False})

    class Stub(torch.nn.Module):  # F(x_in, c_noise) = 0.3 x_in + c_noise (per item)
        def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
            return 0.3 * x_in + c_noise.reshape(-1, 1, 1, 1)

    prior.net = Stub()
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    sigma = torch.tensor([0.02, 0.7, 9.0], dtype=torch.float64)
    d = 0.5
    c_skip = d**2 / (sigma**2 + d**2)
    c_out = sigma * d / (sigma**2 + d**2).sqrt()
    c_in = 1 / (sigma**2 + d**2).sqrt()
    c_noise = sigma.log() / 4
    b = (-1, 1, 1, 1)
    expected = c_skip.reshape(b) * x + c_out.reshape(b) * (0.3 * c_in.reshape(b) * x + c_noise.reshape(b))
    torch.testing.assert_close(prior(x, sigma), expected)


def test_unet_output_shape_and_bad_sizes() -> None:
    prior = build_image_prior("tiny")
    assert prior(torch.zeros(2, 1, 16, 16), 1.0).shape == (2, 1, 16, 16)
    with pytest.raises(UserInputError, match="multiples of 2"):
        prior(torch.zeros(1, 1, 15, 16), 1.0)
    with pytest.raises(UserInputError, match="expects"):
        prior(torch.zeros(1, 3, 16, 16), 1.0)
    with pytest.raises(UserInputError, match="unknown image model config"):
        build_image_prior("huge")


def test_autoencoder_shapes_and_tanh_range() -> None:
    ae = build_autoencoder(channels=[8, 8, 8], latent_channels=3, groups=4)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, 3, 8, 8) and ae.latent_shape((1, 32, 32)) == (3, 8, 8)
    assert z.abs().max() < 1
    assert ae(x, 0.1).shape == x.shape


def test_read_idx_and_splits(tmp_path: Path) -> None:
    root = _fake_fashion_root(tmp_path)
    raw = read_idx(root / "train-images-idx3-ubyte.gz")
    assert raw.shape == (12, 28, 28) and raw.dtype == np.uint8
    images, labels = load_fashion_mnist("test", root)
    assert images.shape == (5, 1, 32, 32) and labels.tolist() == [0, 1, 2, 3, 4]
    # zero padding by 2 pixels and the u8 -> [-1, 1] map
    assert torch.all(images[:, :, :2] == -1) and torch.all(images[:, :, :, -2:] == -1)
    t10k = read_idx(root / "t10k-images-idx3-ubyte.gz")
    torch.testing.assert_close(images[1, 0, 2:30, 2:30], torch.from_numpy(t10k[1] / 127.5 - 1.0).float())
    assert len(FashionMNIST("train", root)) == 12  # fewer than 55,000: all of them
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    with pytest.raises(UserInputError, match="truncated|IDX"):
        read_idx(tmp_path / "bad" / "train-images-idx3-ubyte")
    with pytest.raises(UserInputError, match="dataset-fashion-mnist"):
        load_fashion_mnist("train", tmp_path / "missing")
    with pytest.raises(UserInputError, match="unknown Fashion-MNIST split"):
        load_fashion_mnist("dev", root)


def test_pixel_prior_round_trip(tmp_path: Path) -> None:
    folder = export_tiny_pixel_prior(tmp_path / "p")
    prior = load_image_prior(folder)
    assert prior.kind == "pixel" and prior.sample_shape == IMAGE_SHAPE and prior.autoencoder is None
    torch.manual_seed(0)
    reference = build_image_prior("tiny")
    from safetensors.torch import load_file

    reference.load_state_dict(load_file(str(folder / "model.safetensors")))
    x = torch.randn(2, *IMAGE_SHAPE)
    torch.testing.assert_close(prior(x, 0.7), reference(x, 0.7), rtol=0, atol=0)
    assert len(prior.weights_sha256) == 64


def test_latent_prior_composes_the_decoder(tmp_path: Path) -> None:
    prior = load_image_prior(export_tiny_latent_prior(tmp_path / "l"))
    assert prior.kind == "latent" and prior.sample_shape == (2, 8, 8)
    op = make_operator("sr4", IMAGE_SHAPE)
    z = torch.randn(3, *prior.sample_shape)
    problem = prior.problem(op, torch.zeros(3, 1, 4, 4), 0.05)
    assert isinstance(problem.operator, DecodedOperator)
    assert prior.autoencoder is not None
    torch.testing.assert_close(problem.operator(z), op(prior.autoencoder.decode(z)))
    assert prior.to_image(z).shape == (3, *IMAGE_SHAPE)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="unknown image prior"):
        load_image_prior(tmp_path / "nowhere")
    folder = export_tiny_pixel_prior(tmp_path / "p")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserInputError, match="safetensors"):
        load_image_prior(folder)
    folder = export_tiny_pixel_prior(tmp_path / "q")
    config = json.loads((folder / "config.json").read_text())
    config["model"]["architecture"]["unet"]["channels"] = [8, 8]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError, match="does not match"):
        load_image_prior(folder)
    folder = export_tiny_latent_prior(tmp_path / "r")
    config = json.loads((folder / "config.json").read_text())
    config["metadata"]["kind"] = "autoencoder"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError, match="not an image prior"):
        load_image_prior(folder)


def test_measure_is_seeded_and_solve_shapes(tmp_path: Path) -> None:
    prior = load_image_prior(export_tiny_pixel_prior(tmp_path / "p"))
    op = make_operator("inpainting_center", IMAGE_SHAPE)
    clean = torch.rand(2, *IMAGE_SHAPE) * 2 - 1
    y1, y2 = measure(op, clean, 0.05, seed=3), measure(op, clean, 0.05, seed=3)
    torch.testing.assert_close(y1, y2)
    assert not torch.allclose(y1, measure(op, clean, 0.05, seed=4))
    assert float((y1 - op(clean)).std()) == pytest.approx(0.05, rel=0.3)
    result = solve(prior, op, y1, "dps", "fast", n_samples=2, seed=0, n_steps=5)
    assert result.samples.shape == (2, 2, *IMAGE_SHAPE) and 0 < result.nfe <= 5
    assert result.spread.shape == (2, *IMAGE_SHAPE) and result.samples.abs().max() <= 1
    again = solve(prior, op, y1, "dps", "fast", n_samples=2, seed=0, n_steps=5)
    torch.testing.assert_close(result.samples, again.samples)
    assert sampler_applicable("ddrm", make_operator("blur", IMAGE_SHAPE), prior) is not None
    assert sampler_applicable("ddrm", op, prior) is None


def test_generate_images_is_seeded(tmp_path: Path) -> None:
    from mgdm_audio.image.priors import generate_images

    prior = load_image_prior(export_tiny_latent_prior(tmp_path / "l"))
    a = generate_images(prior, 2, seed=5, steps=5)
    b = generate_images(prior, 2, seed=5, steps=5)
    assert a.shape == (2, *IMAGE_SHAPE) and a.abs().max() <= 1
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, generate_images(prior, 2, seed=6, steps=5))
