"""Adapters for diffusers UNet2DModel folders, safetensors eps checkpoints and deepinv objects (image/adapters.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.operators import LinearOperator
from mgdm_audio.core.schedules import linear_beta_alphas_cumprod
from mgdm_audio.image.adapters import (
    alphas_cumprod_from_scheduler_config,
    from_deepinv_denoiser,
    from_deepinv_physics,
    load_diffusers_prior,
    load_eps_checkpoint,
)

TABLE_INDICES = (1, 37, 500, 1000)  # padded-table indices k; the model step is k - 1


def tiny_unet(out_channels: int = 1, seed: int = 0):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=out_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()


def save_pipeline(folder: Path, unet, prediction_type: str = "epsilon", beta_schedule: str = "linear") -> Path:
    """A diffusers pipeline folder: unet/ (safetensors) + scheduler/ (DDPMScheduler config)."""
    diffusers = pytest.importorskip("diffusers")
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_schedule=beta_schedule, prediction_type=prediction_type
    )
    scheduler.save_pretrained(folder / "scheduler")
    return folder


def table_sigmas(denoiser, batch: int) -> tuple[Tensor, Tensor]:
    """One exact table sigma per chain and the integer model steps ``k - 1`` the network must receive."""
    k = torch.tensor(TABLE_INDICES[:batch])
    return denoiser.levels.sigmas[k], (k - 1).float()


def expected_from_unet(unet, x: Tensor, sigma: Tensor, steps: Tensor, prediction: str) -> Tensor:
    """The formulas written out: eps -> x - s eps(x_vp, t); v -> sqrt(a) x_vp - sqrt(1 - a) v(x_vp, t)."""
    s = sigma.view(-1, 1, 1, 1)
    abar = 1 / (1 + s * s)
    x_vp = (x.double() * abar.sqrt()).float()
    with torch.no_grad():
        out = unet(x_vp, steps).sample[:, :1].double()
    if prediction == "epsilon":
        return (x.double() - s * out).float()
    if prediction == "v_prediction":
        return (abar.sqrt() * x_vp.double() - (1 - abar).sqrt() * out).float()
    return out.float()


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
def test_alphas_cumprod_matches_diffusers_scheduler(schedule):
    diffusers = pytest.importorskip("diffusers")
    kwargs = {"beta_start": 0.00085, "beta_end": 0.012} if schedule == "scaled_linear" else {}
    reference = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=schedule, **kwargs)
    ours = alphas_cumprod_from_scheduler_config(dict(reference.config))
    assert ours.dtype == torch.float64 and ours.shape == (1000,)
    # diffusers accumulates in float32; ours in float64.
    torch.testing.assert_close(ours, reference.alphas_cumprod.double(), rtol=2e-4, atol=1e-7)


def test_alphas_cumprod_trained_betas_and_refusals():
    betas = [0.1, 0.2, 0.3]
    torch.testing.assert_close(
        alphas_cumprod_from_scheduler_config({"trained_betas": betas}),
        torch.tensor([0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.7], dtype=torch.float64),
    )
    defaults = alphas_cumprod_from_scheduler_config({"beta_schedule": "linear"})
    torch.testing.assert_close(defaults, linear_beta_alphas_cumprod(1000, 1e-4, 0.02))
    refused = [
        {"_class_name": "EDMEulerScheduler", "sigma_min": 0.002, "sigma_max": 80.0},  # not VP
        {"beta_schedule": "laplace"},
        {"beta_schedule": "linear", "rescale_betas_zero_snr": True},
        {"trained_betas": [0.1, 1.5]},
    ]
    for config in refused:
        with pytest.raises(UserInputError):
            alphas_cumprod_from_scheduler_config(config)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_diffusers_pipeline_folder_matches_unet_formula(tmp_path, prediction):
    unet = tiny_unet()
    folder = save_pipeline(tmp_path, unet, prediction_type=prediction)
    denoiser, shape = load_diffusers_prior(folder)
    assert shape == (1, 8, 8)
    diffusers = pytest.importorskip("diffusers")
    abar_model = diffusers.DDPMScheduler.from_pretrained(folder / "scheduler").alphas_cumprod.double()
    torch.testing.assert_close(denoiser.levels.abar[1:], abar_model, rtol=2e-4, atol=1e-7)
    assert denoiser.levels.abar[0] == 1.0

    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    sigma, steps = table_sigmas(denoiser, 4)
    expected = expected_from_unet(unet, x, sigma, steps, prediction)
    with torch.no_grad():
        got = denoiser(x, sigma)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # The check can fail: one step off gives a different network output.
    off_by_one = expected_from_unet(unet, x, sigma, steps + 1, prediction)
    assert (off_by_one - expected).abs().max() > 1e-3


def test_diffusers_bare_unet_folder_and_unet_subfolder(tmp_path):
    """A bare UNet folder with scheduler_config.json inside; a pipeline's unet/ passed directly; learned variance."""
    diffusers = pytest.importorskip("diffusers")
    unet = tiny_unet(out_channels=2, seed=3)  # learned-variance UNet: first channel is eps
    bare = tmp_path / "bare"
    unet.save_pretrained(bare, safe_serialization=True)
    diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2").save_pretrained(bare)
    save_pipeline(tmp_path / "pipe", unet)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    for folder in (bare, tmp_path / "pipe" / "unet"):
        denoiser, shape = load_diffusers_prior(folder)
        assert shape == (1, 8, 8)
        sigma, steps = table_sigmas(denoiser, 2)
        with torch.no_grad():
            got = denoiser(x, sigma)
        torch.testing.assert_close(got, expected_from_unet(unet, x, sigma, steps, "epsilon"), rtol=1e-5, atol=1e-5)
    cosine, _ = load_diffusers_prior(bare)
    linear, _ = load_diffusers_prior(tmp_path / "pipe" / "unet")
    assert not torch.allclose(cosine.levels.sigmas, linear.levels.sigmas)


def test_diffusers_prior_gradient_and_fractional_sigma(tmp_path):
    """Gradients flow to x (not to the frozen UNet); a sigma between table levels runs (fractional step)."""
    unet = tiny_unet(seed=4)
    denoiser, _ = load_diffusers_prior(save_pipeline(tmp_path, unet))
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5), requires_grad=True)
    out = denoiser(x, 0.7)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(not p.requires_grad for p in denoiser.net.unet.parameters())


def test_diffusers_folder_errors(tmp_path):
    unet = tiny_unet(seed=6)
    with pytest.raises(UserInputError, match="does not exist"):
        load_diffusers_prior(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="config.json"):
        load_diffusers_prior(tmp_path / "empty")

    no_scheduler = tmp_path / "a" / "no_scheduler"
    unet.save_pretrained(no_scheduler, safe_serialization=True)
    with pytest.raises(UserInputError, match="scheduler_config.json"):
        load_diffusers_prior(no_scheduler)

    pickled = save_pipeline(tmp_path / "pickled", tiny_unet(seed=6))
    (pickled / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    unet.save_pretrained(pickled / "unet", safe_serialization=False)
    assert (pickled / "unet" / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(UserInputError, match="pickled"):
        load_diffusers_prior(pickled)

    missing_key = save_pipeline(tmp_path / "missing_key", unet)
    weights = missing_key / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, weights)
    with pytest.raises(UserInputError, match="missing"):
        load_diffusers_prior(missing_key)

    conditional = save_pipeline(tmp_path / "conditional", unet)
    config_path = conditional / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["_class_name"] = "UNet2DConditionModel"
    config_path.write_text(json.dumps(config))
    with pytest.raises(UserInputError, match="UNet2DConditionModel"):
        load_diffusers_prior(conditional)

    bad_prediction = save_pipeline(tmp_path / "bad_prediction", unet)
    scheduler_path = bad_prediction / "scheduler" / "scheduler_config.json"
    scheduler = json.loads(scheduler_path.read_text())
    scheduler["prediction_type"] = "flow"
    scheduler_path.write_text(json.dumps(scheduler))
    with pytest.raises(UserInputError, match="prediction_type"):
        load_diffusers_prior(bad_prediction)
    scheduler_path.write_text("{not json")
    with pytest.raises(UserInputError, match="JSON"):
        load_diffusers_prior(bad_prediction)


def test_diffusers_missing_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if diffusers were not installed
    with pytest.raises(UserInputError, match=r"pip install 'mgdm_audio\[diffusers\]'"):
        load_diffusers_prior(tmp_path)


class TinyEpsNet(nn.Module):
    """A small eps network ``net(x, t)``: a convolution plus a time-dependent per-channel bias."""

    def __init__(self, channels: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.time = nn.Linear(2, channels)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        features = torch.stack([torch.sin(t / 50), torch.cos(t / 50)], dim=-1)
        return self.conv(x) + self.time(features)[:, :, None, None]


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_eps_checkpoint_matches_formula(tmp_path, prediction):
    torch.manual_seed(7)
    net = TinyEpsNet()
    weights = tmp_path / "eps.safetensors"
    save_file(net.state_dict(), weights)
    abar_model = linear_beta_alphas_cumprod(1000)
    denoiser = load_eps_checkpoint(weights, TinyEpsNet, abar_model, prediction=prediction)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(8))
    k = torch.tensor([1, 250, 999])
    sigma = ((1 - abar_model[k - 1]) / abar_model[k - 1]).sqrt()
    s = sigma.view(-1, 1, 1, 1)
    abar = 1 / (1 + s * s)
    x_vp = (x.double() * abar.sqrt()).float()
    with torch.no_grad():
        out = net(x_vp, (k - 1).float()).double()
        got = denoiser(x, sigma)
    if prediction == "epsilon":
        expected = x.double() - s * out
    else:
        expected = abar.sqrt() * x_vp.double() - (1 - abar).sqrt() * out
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=1e-5)


def test_eps_checkpoint_errors(tmp_path):
    torch.manual_seed(9)
    abar_model = linear_beta_alphas_cumprod(1000)
    good = tmp_path / "eps.safetensors"
    save_file(TinyEpsNet().state_dict(), good)

    pickled = tmp_path / "eps.pt"
    torch.save(TinyEpsNet().state_dict(), pickled)
    with pytest.raises(UserInputError, match="only .safetensors"):
        load_eps_checkpoint(pickled, TinyEpsNet, abar_model)
    with pytest.raises(UserInputError, match="does not exist"):
        load_eps_checkpoint(tmp_path / "absent.safetensors", TinyEpsNet, abar_model)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(UserInputError, match="not a readable safetensors"):
        load_eps_checkpoint(garbage, TinyEpsNet, abar_model)

    state = TinyEpsNet().state_dict()
    state["extra.weight"] = state.pop("time.bias")
    renamed = tmp_path / "renamed.safetensors"
    save_file(state, renamed)
    with pytest.raises(UserInputError, match=r"missing keys \[time.bias\].*unexpected keys \[extra.weight\]"):
        load_eps_checkpoint(renamed, TinyEpsNet, abar_model)
    with pytest.raises(UserInputError, match="mismatched shapes"):
        load_eps_checkpoint(good, lambda: TinyEpsNet(channels=3), abar_model)
    with pytest.raises(UserInputError, match="prediction"):
        load_eps_checkpoint(good, TinyEpsNet, abar_model, prediction="x0")
    with pytest.raises(UserInputError, match="nn.Module"):
        load_eps_checkpoint(good, lambda: lambda x, t: x, abar_model)


def test_deepinv_denoiser_affine_map_on_a_gaussian_prior():
    """u0 ~ N(m, v) on [0, 1] has D01(u, s) = m + v (u - m) / (v + s^2); on [-1, 1] x0 ~ N(2m - 1, 4v)."""
    m, v = 0.3, 0.05

    def gaussian_denoiser_01(u: Tensor, s: Tensor) -> Tensor:
        s = torch.as_tensor(s, dtype=u.dtype).view(-1, *([1] * (u.ndim - 1)))
        return m + v * (u - m) / (v + s * s)

    prior = from_deepinv_denoiser(gaussian_denoiser_01, sigma_max=50 / 255, sigma_min=1e-3)
    assert prior.levels.sigma_max == pytest.approx(2 * 50 / 255)
    assert prior.levels.sigma_min == pytest.approx(2e-3)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    sigma = torch.tensor([0.05, 0.2, 0.4], dtype=torch.float64)
    mean, var, s = 2 * m - 1, 4 * v, sigma.view(-1, 1, 1, 1)
    torch.testing.assert_close(prior(x, sigma), mean + var * (x - mean) / (var + s * s))


def test_deepinv_physics_wrappers():
    deepinv = pytest.importorskip("deepinv")
    generator = torch.Generator().manual_seed(11)
    mask = (torch.rand(1, 8, 8, generator=generator) > 0.5).float()
    physics = deepinv.physics.Inpainting(img_size=(1, 8, 8), mask=mask)
    x = torch.rand(2, 1, 8, 8, generator=generator) * 2 - 1

    affine = from_deepinv_physics(physics, x_shape=(1, 8, 8))
    assert not isinstance(affine, LinearOperator)
    torch.testing.assert_close(affine(x), mask * (x + 1) / 2)

    linear = from_deepinv_physics(physics, zero_one=False)
    assert isinstance(linear, LinearOperator)
    y = torch.randn(2, 1, 8, 8, generator=generator)
    torch.testing.assert_close((linear(x) * y).sum(), (x * linear.adjoint(y)).sum())
    torch.testing.assert_close(linear.pinv(linear(x)), mask * x)
    # The documented [0, 1] -> [-1, 1] measurement map for a linear physics: y = 2 y01 - A(1).
    y01 = physics.A((x + 1) / 2)
    torch.testing.assert_close(2 * y01 - physics.A(torch.ones_like(x)), linear(x))

    with pytest.raises(UserInputError, match="Physics"):
        from_deepinv_physics(lambda x: x)
