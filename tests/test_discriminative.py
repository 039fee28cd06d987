"""The discriminative separator (demucs' HTDemucs trained by the project's trainer with the L1 loss): windowed
estimates, training, export and loading, the Separator and CLI paths alone and as the warm start of MGDM."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile as sf
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from mgdm_audio.audio.separator import DEFAULT_SEPARATOR, Separator
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.metrics.sisdr import si_snr
from mgdm_audio.samplers.registry import SAMPLER_MODULES
from mgdm_audio.training import FactorySpec, Recipe, TrainSettings, ValidationSettings, train
from tests.audio_priors_for_tests import BANDS, BandPrior, band_stems

pytest.importorskip("demucs")
from mgdm_audio.audio.discriminative import available_separators, estimate, load_separator  # noqa: E402
from mgdm_audio.audio.priors import available_priors  # noqa: E402

SR, CHUNK = 8000, 1024
STEMS = ["bass", "drums", "guitar", "piano"]
TINY = {"channels": 8, "depth": 2, "t_layers": 1, "nfft": 256, "t_heads": 2}


class Copy(nn.Module):
    """A stand-in network: every stem is the mixture (so a windowed estimate must give the mixture back exactly)."""

    def __init__(self) -> None:
        super().__init__()
        self.stems, self.chunk_samples = STEMS, 100
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, mix: Tensor) -> Tensor:
        assert mix.shape[-1] == self.chunk_samples
        return mix.expand(-1, len(self.stems), -1) * 1.0


def test_windowed_estimate_weights_sum_to_one():
    mix = torch.randn(2, 1, 437)
    got = estimate(Copy(), mix)  # type: ignore[arg-type]
    assert got.shape == (2, 4, 437)
    torch.testing.assert_close(got, mix.expand(-1, 4, -1), rtol=1e-6, atol=1e-6)


class BandStems(Dataset):
    def __init__(self, n_items: int = 16, seed: int = 0) -> None:
        self.n_items, self.seed, self.epoch = n_items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_items

    def __getitem__(self, index: int) -> Tensor:
        return band_stems(CHUNK, SR, seed=self.seed * 100_003 + self.epoch * 1009 + index) * 2.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    out = tmp_path_factory.mktemp("sep")
    recipe = Recipe(
        name="tiny-htdemucs",
        model=FactorySpec(
            "mgdm_audio.audio.discriminative:build_separator",
            {"stems": STEMS, "sample_rate": SR, "chunk_samples": CHUNK, "htdemucs": TINY},
        ),
        data=FactorySpec(BandStems, {"n_items": 16}),
        training=TrainSettings(
            objective="regression", batch_size=4, lr=3e-3, ema_decay=0.5, checkpoint_every=0, validate_every=0
        ),
        validation=ValidationSettings(data=FactorySpec(BandStems, {"n_items": 4, "seed": 9}), items=4),
        metadata={"stems": STEMS, "sample_rate": SR, "chunk_samples": CHUNK},
        text="name: tiny-htdemucs\n",
    )
    result = train(recipe, out, max_steps=40, progress=False)
    assert set(result.validation) == {"l1", "mean_over_bands"}
    return result.export_dir, [loss for _, loss in result.losses]


def test_l1_training_export_and_load(trained):
    folder, losses = trained
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8  # the L1 loss falls
    card = (folder / "MODEL_CARD.md").read_text()
    assert "L1 waveform loss" in card
    sep = load_separator(folder)
    assert sep.stems == tuple(STEMS) and sep.sample_rate == SR and sep.chunk_samples == CHUNK
    config = json.loads((folder / "config.json").read_text())
    assert config["training"]["objective"] == "regression" and config["parameters"] < 20_000_000
    mix = band_stems(CHUNK, SR, seed=5).sum(0)[None, None] * 2.0
    assert sep.estimate(mix).shape == (1, 4, CHUNK)
    with pytest.raises(UserInputError, match="unknown separator"):
        load_separator(folder / "missing")
    with pytest.raises(UserInputError, match="not a discriminative separator"):
        load_separator("slakh-style-small")  # a shipped prior


def test_separator_alone_streams_and_reports(trained, tmp_path, monkeypatch):
    folder, _ = trained
    stems = band_stems(3 * CHUNK + 100, SR, seed=7) * 2.0
    sep = Separator(sampler="demucs", init=folder, output="prior", n_samples=2)
    result = sep.separate_tensor(stems.sum(0), SR)
    assert result.stems.shape == (4, 1, stems.shape[-1]) and result.info["nfe"] == 0
    assert result.info["sampler"] == "demucs" and result.info["init_seconds"] > 0
    assert float(result.spread.abs().max()) == 0.0  # one deterministic estimate per chunk
    torch.testing.assert_close(result.stems.sum(0)[0], stems.sum(0), atol=1e-4, rtol=0)  # projected on the mix
    shipped = Separator(sampler="demucs")  # without --init: the shipped separator
    assert shipped.estimator.path.name == DEFAULT_SEPARATOR == available_separators()[0]
    assert DEFAULT_SEPARATOR not in available_priors()  # separators are not listed as priors
    with pytest.raises(UserInputError, match="go together"):
        Separator(prior=BandPrior(SR, CHUNK), init=folder)
    monkeypatch.setitem(SAMPLER_MODULES, "one_step", "tests.toy_sampler")  # a plug-in that declares no warm start
    with pytest.raises(UserInputError, match="no warm start"):
        Separator(prior=BandPrior(SR, CHUNK), sampler="one_step", init=folder, init_sigma=0.1)


def test_cli_separates_with_the_separator_alone(trained, tmp_path):
    from mgdm_audio.cli import main

    folder, _ = trained
    wav = tmp_path / "song.wav"
    sf.write(wav, (band_stems(2 * CHUNK, SR, seed=3).sum(0) * 2.0).numpy(), SR)
    assert main(["separate", str(wav), "--sampler", "demucs", "--init", str(folder), "-o", str(tmp_path / "o")]) == 0
    run = json.loads((tmp_path / "o" / "tiny-htdemucs" / "song" / "run.json").read_text())
    assert run["sampler"] == "demucs" and run["real_time_factor"] > 0 and run["seconds"] > 0


@dataclass
class BandSplit:
    """A stand-in estimator with the loaded separator's interface: the ideal band split of the mixture (the toy
    prior's posterior mean), so a warm start from it at a small level must stay there."""

    stems: tuple[str, ...] = tuple(STEMS)
    sample_rate: int = SR
    chunk_samples: int = CHUNK
    weights_sha256: str = "1" * 64
    downsampling: int = 1
    config = {"name": "band-split"}

    def to(self, device):
        return self

    def estimate(self, mix: Tensor) -> Tensor:
        spec = torch.fft.rfft(mix.double(), dim=-1)
        freqs = torch.fft.rfftfreq(mix.shape[-1], 1.0 / SR)
        masks = torch.stack([((freqs >= lo - 100) & (freqs < hi + 100)).double() for lo, hi in BANDS])
        return torch.fft.irfft(spec * masks[None], n=mix.shape[-1], dim=-1).to(mix.dtype)


def test_warm_started_mgdm_in_the_separator():
    stems = band_stems(2 * CHUNK, SR, seed=11)
    mix = stems.sum(0)

    def run(**kw):
        sep = Separator(prior=BandPrior(SR, CHUNK), sampler="mgdm", preset="fast", output="prior", n_samples=2, **kw)
        return sep.separate_tensor(mix, SR)

    cold = run()
    warm = run(init=BandSplit(), init_sigma=1e-4)
    assert 0 < warm.info["nfe"] < cold.info["nfe"] / 4 and warm.info["init_sigma"] == 1e-4
    assert warm.spread is not None and warm.samples.shape == (2, 4, 1, mix.numel())
    assert warm.info["overlap_conditioning"] is True  # odd chunks conditioned on their neighbours' overlaps
    ideal = BandSplit().estimate(mix[None, None])[0]
    near = [float(si_snr(warm.stems[s, 0], ideal[s])) for s in range(4)]
    far = [float(si_snr(cold.stems[s, 0], ideal[s])) for s in range(4)]
    # at the estimate up to the noise of the grid's smallest level (sigma 0.01 here), the cold start far from it
    assert min(near) > 13.0 and max(far) < min(near) - 5.0, (near, far)


def test_benchmark_rows_for_the_separator_cold_and_warm_mgdm(tmp_path):
    from mgdm_audio.benchmarks import separation as sb
    from tests.test_benchmark_separation import CHUNK as BENCH_CHUNK
    from tests.test_benchmark_separation import write_slakh

    data = write_slakh(tmp_path / "slakh", tracks=2)
    prior = BandPrior(SR, BENCH_CHUNK)
    table = (
        "demucs=demucs,cold=mgdm:fast,warm=mgdm:fast:init_sigma=0.01,warm-mean2=mgdm:fast:init_sigma=0.01:n_samples=2"
    )
    runs = sb.make_runs([], "fast", table, oracles=False)
    with pytest.raises(UserInputError, match="--init"):
        sb.prepare(data, "slakh", "test", prior, runs, max_chunks=1, device="cpu", chunk_seconds=BENCH_CHUNK / SR)
    setup = sb.prepare(
        data, "slakh", "test", prior, runs, 2, 0, BENCH_CHUNK / SR, "cpu", init=BandSplit(chunk_samples=BENCH_CHUNK)
    )
    assert setup.info["init"]["name"] == "band-split"
    keys = [sb.cell_key(setup, r, setup.chunks[0]) for r in runs]
    assert keys[2]["init"]["sigma"] == 0.01 and "init" not in keys[1] and keys[0]["sampler"] == "demucs"
    summary = sb.summarise(sb.run_benchmark(setup, progress=False))
    nfe = {name: summary[name]["nfe_per_chunk"] for name in ("demucs", "cold", "warm")}
    assert nfe["demucs"] == 0 and 0 < nfe["warm"] < nfe["cold"]
    assert all(summary[name]["seconds_per_chunk"] > 0 for name in ("demucs", "cold", "warm", "warm-mean2"))
