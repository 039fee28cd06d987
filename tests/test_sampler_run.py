"""The posterior-run layer: one run-spec syntax, one preset table per modality, the start convention of the run
(not of a sampler config), neighbour conditioning declared by the sampler, and run_posterior equal to the call it
replaces."""

import math

import pytest
import torch

from mgdm_audio.core.errors import UserInputError
from mgdm_audio.core.gmm import GaussianMixture
from mgdm_audio.core.rng import make_generator
from mgdm_audio.samplers.registry import get_sampler, sampler_names
from mgdm_audio.samplers.run import RunSpec, parse_run_spec, parse_run_specs, resolve, run_posterior


def test_one_syntax_for_every_run_spec():
    assert parse_run_spec("mgdm") == RunSpec("mgdm", "default", (), "mgdm")
    assert parse_run_spec("dps:paper", "fast") == RunSpec("dps", "paper", (), "dps:paper")
    assert parse_run_spec("pigdm", "fast").preset == "fast"  # the job's preset when the entry names none
    spec = parse_run_spec("r2=mgdm:fast:n_reps=2:lr_default=1e-3:tau_per_chain=true:noising_eta=none")
    assert spec.label == "r2" and spec.overrides_dict == {
        "n_reps": 2,
        "lr_default": 1e-3,
        "tau_per_chain": True,
        "noising_eta": None,
    }
    assert parse_run_spec("ddrm:fast:n_steps=5").name == "ddrm:fast:n_steps=5"
    for bad in ("=mgdm", "x=", ":fast", "mgdm:fast:n_reps"):
        with pytest.raises(UserInputError, match="--samplers"):
            parse_run_spec(bad)
    with pytest.raises(UserInputError, match="unique"):
        parse_run_specs("a=mgdm,a=dps")


@pytest.mark.parametrize(
    ("sampler", "preset", "modality", "want"),
    [
        ("mgdm", "default", "audio", "audio"),
        ("mgdm", "fast", "audio", "audio-fast"),
        ("mgdm", "paper", "audio", "paper-audio"),
        ("dps", "default", "audio", "fast"),  # no `audio` preset: the next in the row
        ("dps", "fast", "audio", "audio-fast"),  # every audio sampler has its own `audio-fast`
        ("pnpdm", "paper", "audio", "paper-audio"),
        ("msdm", "paper", "audio", "paper-audio"),
        ("mgdm", "default", "image", "image"),
        ("ddrm", "paper", "image", "paper-image"),
        ("ddim", "paper", "image", "default"),  # none of the row: the sampler's own default
        ("mgdm", "gmm", "image", "gmm"),  # a sampler preset by its own name
        ("mgdm", "fast", "plain", "fast"),  # plain: no job presets
    ],
)
def test_preset_table(sampler, preset, modality, want):
    assert resolve(RunSpec(sampler, preset), modality).sampler_preset == want


def test_unknown_names_are_one_clear_error():
    with pytest.raises(UserInputError, match="no preset 'nope'"):
        resolve(RunSpec("mgdm", "nope"), "audio")
    with pytest.raises(UserInputError, match="no setting"):
        resolve(RunSpec("dps", "fast", (("no_such", 1),)), "image")
    with pytest.raises(UserInputError, match="start_scale"):
        resolve(RunSpec("dps", "fast", (("start_scale", "half"),)), "image")


def test_start_convention_belongs_to_the_run_and_a_user_override_wins():
    assert resolve(RunSpec("dps"), "audio").start_scale == "vp"
    assert resolve(RunSpec("dps"), "image").start_scale == "unit"
    assert resolve(RunSpec("dps", "default", (("start_scale", "unit"),)), "audio").start_scale == "unit"
    assert not any(hasattr(get_sampler(n).config(), "start_scale") for n in sampler_names())
    # vp on x_init is unit on sqrt(1 - abar_T) x_init, abar_T at the top of DDIM's grid
    mixture = GaussianMixture.grid25(2, make_generator(0))
    vp, unit = (resolve(RunSpec("ddim", "fast", (("start_scale", s),))) for s in ("vp", "unit"))
    got = run_posterior(mixture.denoiser(), None, vp, 3, 5, x_shape=(2,)).samples
    levels = mixture.denoiser().levels
    scale = float((1 - levels.abar[levels.timesteps(vp.config.n_steps)[-1]]).sqrt())
    assert scale < 1.0
    g = make_generator(5)  # the starting noise and then the chain's noise, as run_posterior draws them
    x_init = torch.randn(3, 2, generator=g) * scale
    want = unit.sampler.run(mixture.denoiser(), None, x_init, generator=g, config=unit.config, start_scale="unit")
    assert torch.equal(got, want.samples)


def test_run_posterior_is_the_call_it_replaces():
    mixture = GaussianMixture.grid25(4, make_generator(1))
    run = resolve(RunSpec("ddim", "fast", (("eta", 0.5),)), "audio")
    got = run_posterior(mixture.denoiser(), None, run, 6, 11, x_shape=(4,))
    g = make_generator(11)
    x_init = torch.randn(6, 4, generator=g)
    want = run.sampler.run(mixture.denoiser(), None, x_init, generator=g, config=run.config, start_scale="vp")
    assert torch.equal(got.samples, want.samples) and got.nfe == want.nfe == 19
    # with the starting noise from its own generator (the generate jobs): x_init from `init`, the chain from `seed`
    again = run_posterior(mixture.denoiser(), None, run, 6, make_generator(12), x_shape=(4,), init=make_generator(11))
    g2 = make_generator(12)
    want2 = run.sampler.run(mixture.denoiser(), None, x_init, generator=g2, config=run.config, start_scale="vp")
    assert torch.equal(again.samples, want2.samples)
    assert math.isfinite(float(got.samples.sum()))


def test_extra_observations_are_declared_by_the_sampler():
    assert [n for n in sampler_names() if not get_sampler(n).extra_observations] == ["msdm"]
    assert resolve(RunSpec("mgdm"), "audio").extra_observations


def test_separator_keeps_a_users_start_scale():
    from mgdm_audio.audio.separator import Separator
    from tests.audio_priors_for_tests import BandPrior

    prior = BandPrior(sample_rate=8000, chunk_samples=1024)
    assert Separator(prior, sampler="dps", preset="fast", device="cpu").run.start_scale == "vp"
    mine = Separator(prior, sampler="dps", preset="fast", device="cpu", sampler_overrides={"start_scale": "unit"})
    assert mine.run.start_scale == "unit" and mine.sampler_preset == "audio-fast"
