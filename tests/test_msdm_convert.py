"""MSDM's published prior (audio-diffusion-pytorch 0.0.43): the package-built network, the converter from a Lightning
checkpoint or a whole pickled model, the loaded denoiser against the package's ``denoise_fn``, and the CLI paths
(``convert``, ``separate -n``, ``generate -n``, ``benchmark separation --prior``). Checkpoints whose pickle would run
code are refused before anything runs (tested with a live payload that creates a marker file)."""

from __future__ import annotations

import json
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import soundfile as sf
import torch

from mgdm_audio.audio.msdm_convert import ExportOptions, convert_msdm, extract_unet_state
from mgdm_audio.audio.msdm_net import MSDM_CONFIGS, MSDMNetConfig
from mgdm_audio.cli import main
from mgdm_audio.core.errors import UserInputError

STEMS = ("bass", "drums", "guitar", "piano")
SR, CHUNK = 8000, 20032  # a multiple of the tiny network's downsampling (64); 2.5 s chunks keep the CLI runs short


def _package():
    return pytest.importorskip("audio_diffusion_pytorch", reason="needs the [msdm] extra")


def _audio_diffusion_model(config: MSDMNetConfig):
    adp = _package()
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in config.to_dict().items()}
    return adp.AudioDiffusionModel(
        **kwargs,
        diffusion_sigma_distribution=adp.LogNormalDistribution(mean=-3.0, std=1.0),
        diffusion_sigma_data=0.2,
        diffusion_dynamic_threshold=0.0,
    )


@pytest.fixture
def lightning_model(monkeypatch):
    """A tiny random-weight model wrapped as MSDM's ``main.module_base.Model`` (importable for pickling)."""
    adp = _package()
    module = types.ModuleType("main.module_base")

    class Model(torch.nn.Module):  # the fields the Lightning module pickles that matter here
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.model = net
            self._hparams = {
                "learning_rate": 1e-4,
                "diffusion_sigma_data": 0.2,
                "diffusion_dynamic_threshold": 0.0,
                "diffusion_sigma_distribution": adp.LogNormalDistribution(mean=-3.0, std=1.0),
            }

    Model.__module__, Model.__qualname__ = "main.module_base", "Model"
    module.Model = Model
    monkeypatch.setitem(sys.modules, "main", types.ModuleType("main"))
    monkeypatch.setitem(sys.modules, "main.module_base", module)
    torch.manual_seed(0)
    net = _audio_diffusion_model(MSDM_CONFIGS["tiny"])
    with torch.no_grad():  # every tensor random (the package zero-initialises none, but be explicit), not saturating
        for p in net.parameters():
            p.copy_(0.1 * torch.randn_like(p))
    return Model(net)


def _save_lightning(model, path: Path) -> Path:
    torch.save(
        {
            "epoch": 419,
            "global_step": 0,
            "pytorch-lightning_version": "1.7.7",
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model._hparams),
        },
        path,
    )
    return path


def test_published_network_names_and_shapes_match_the_converter() -> None:
    """All 434 unique tensors of MSDM's published AudioDiffusionModel, in the Lightning layout, are what the
    converter expects; 405,497,700 parameters."""
    from mgdm_audio.audio.msdm_net import build_unet1d

    with torch.device("meta"):
        adm = _audio_diffusion_model(MSDM_CONFIGS["published"])
        expected = build_unet1d(MSDM_CONFIGS["published"]).state_dict()
    lightning = {f"model.{k}": v for k, v in adm.state_dict().items()}
    assert len(lightning) == 2 * 434
    unet = extract_unet_state(lightning, Path("published.ckpt"))
    assert len(unet) == 434 == len(expected)
    assert {k: tuple(v.shape) for k, v in unet.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    assert sum(p.numel() for p in adm.parameters()) == 405_497_700
    assert MSDM_CONFIGS["published"].downsampling == 8192


@pytest.mark.parametrize("layout", ["lightning", "lightning-legacy", "lightning-plain-pickle", "pickled-model"])
def test_converted_prior_equals_the_package_denoise_fn(lightning_model, tmp_path: Path, layout: str) -> None:
    from mgdm_audio.audio.priors import load_prior

    if layout == "lightning":
        source = _save_lightning(lightning_model, tmp_path / "epoch=419.ckpt")
    elif layout != "pickled-model":  # torch's pre-1.6 format, or pickle.dump of the checkpoint dict
        source = _save_lightning(lightning_model, tmp_path / "zip.ckpt")
        content = torch.load(source, weights_only=False)
        source = tmp_path / "epoch=419.ckpt"
        if layout == "lightning-legacy":
            torch.save(content, source, _use_new_zipfile_serialization=False)
        else:
            source.write_bytes(pickle.dumps(content))
    else:
        source = tmp_path / "msdm_model.pt"
        torch.save(lightning_model, source)  # the whole object, as the MGDM repository stores it
    out = tmp_path / "export"
    config = convert_msdm(source, out, ExportOptions(architecture="tiny"))
    import hashlib

    assert config["converted_from"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert config["converted_from"]["file"] == source.name
    assert config["converted_from"]["sha256"] in (out / "MODEL_CARD.md").read_text()
    prior = load_prior(out)
    torch.manual_seed(1)
    x0 = 0.1 * torch.randn(3, 4, 64)
    with torch.no_grad():
        for sigma in (1e-3, 0.05, 0.5, 5.0):
            x = x0 + sigma * torch.randn_like(x0)
            ours = prior(x, sigma)
            theirs = lightning_model.model.diffusion.denoise_fn(x, sigma=sigma)
            assert (ours.abs() < 0.999).float().mean() > 0.5  # the comparison is not between two clamps
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        sigmas = torch.tensor([1e-3, 0.3, 7.0])  # one level per chain
        torch.testing.assert_close(
            prior(x0, sigmas), lightning_model.model.diffusion.denoise_fn(x0, sigmas=sigmas), atol=1e-5, rtol=0
        )


def test_recipe_network_is_the_converted_one(lightning_model, tmp_path: Path) -> None:
    """The training recipe's factory builds the same module (same keys and shapes) as a converted checkpoint."""
    from mgdm_audio.audio.model import prior_from_export_config
    from mgdm_audio.audio.msdm_net import build_msdm_prior
    from mgdm_audio.training.trainer import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes/prior/msdm.yaml")
    assert recipe.model.kwargs["config"] == "published" and recipe.model.factory.endswith(":build_msdm_prior")
    built = build_msdm_prior("tiny", edm=recipe.model.kwargs["edm"])
    config = convert_msdm(
        _save_lightning(lightning_model, tmp_path / "m.ckpt"), tmp_path / "export", ExportOptions("tiny")
    )
    assert config["model"]["architecture"] == built.export_config()
    rebuilt = prior_from_export_config(built.export_config())
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in built.state_dict().items()}


def test_cli_convert_then_separate_generate_and_benchmark(lightning_model, tmp_path: Path, capsys) -> None:
    source = _save_lightning(lightning_model, tmp_path / "tiny.ckpt")
    export = tmp_path / "export"
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(MSDM_CONFIGS["tiny"].to_dict()))
    args = ["convert", "msdm", str(source), "-o", str(export), "--architecture", str(arch)]
    assert main(args) == 0
    cfg = json.loads((export / "config.json").read_text())
    cfg["metadata"].update(sample_rate=SR, chunk_samples=CHUNK)  # a short test chunk for the tiny network
    (export / "config.json").write_text(json.dumps(cfg))
    sha = cfg["converted_from"]["sha256"]
    assert main(args) == 2 and "already holds an export" in capsys.readouterr().err

    t = torch.arange(SR) / SR
    mix = tmp_path / "mix.wav"
    sf.write(mix, (0.1 * torch.sin(2 * torch.pi * 220 * t)).numpy(), SR)
    common = ["-n", str(export), "--preset", "fast", "--no-progress"]
    assert main(["separate", str(mix), "-o", str(tmp_path / "sep"), *common]) == 0
    run = json.loads(next((tmp_path / "sep").rglob("run.json")).read_text())
    assert run["prior_source"]["sha256"] == sha and run["weights_sha256"] == cfg["weights_sha256"]
    assert main(["generate", "-n", str(export), "-o", str(tmp_path / "gen"), "--seconds", "0.5"]) == 0
    assert sorted(p.stem for p in (tmp_path / "gen").rglob("*.wav"))

    root = tmp_path / "slakh"
    for i in range(2):
        folder = root / "test" / f"Track{i:05d}"
        folder.mkdir(parents=True)
        for stem in STEMS:
            sf.write(folder / f"{stem}.wav", (0.05 * torch.randn(2 * CHUNK)).numpy(), SR, subtype="FLOAT")
    bench = ["benchmark", "separation", "--root", str(root), "--layout", "slakh", "--prior", str(export)]
    report = tmp_path / "bench.json"
    extra = ["--samplers", "msdm", "--preset", "fast", "--no-oracles", "--json", str(report), "--no-progress"]
    extra += ["--chunk-seconds", str(CHUNK / SR), "--max-chunks", "1"]
    assert main([*bench, *extra, "--device", "cpu", "--threads", "1"]) == 0
    assert sha in report.read_text() or cfg["weights_sha256"] in report.read_text()


def test_mismatched_architecture_is_one_sentence_and_writes_nothing(lightning_model, tmp_path: Path, capsys) -> None:
    source = _save_lightning(lightning_model, tmp_path / "tiny.ckpt")
    out = tmp_path / "export"
    assert main(["convert", "msdm", str(source), "-o", str(out)]) == 2  # default: the published architecture
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not match the published MSDM network" in err
    assert not out.exists()


# ------------------------------------------------------------------------------------- refusing code in pickles


class _Payload:
    """Unpickling this runs ``touch MARKER`` (the attack the converter must not fall for)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("form", ["plain-pickle", "torch-zip"])
def test_checkpoint_that_runs_code_is_refused_and_the_code_does_not_run(tmp_path: Path, capsys, form: str) -> None:
    marker = tmp_path / "ran"
    evil = {"state_dict": {"model.unet.x": torch.zeros(2)}, "hyper_parameters": {"x": _Payload(marker)}}
    path = tmp_path / "evil.ckpt"
    if form == "plain-pickle":
        path.write_bytes(pickle.dumps(evil, protocol=2))
        live = lambda: pickle.loads(path.read_bytes())  # noqa: E731
    else:
        torch.save(evil, path)
        live = lambda: torch.load(path, weights_only=False)  # noqa: E731
    live()  # the payload is live: an ordinary load runs it
    assert marker.exists()
    marker.unlink()

    out = tmp_path / "export"
    assert main(["convert", "msdm", str(path), "-o", str(out), "--architecture", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "system" in err and "not on the converter's allow-list" in err
    assert not marker.exists() and not out.exists()


def test_corrupt_file_is_one_sentence(tmp_path: Path, capsys) -> None:
    path = tmp_path / "broken.ckpt"
    path.write_bytes(b"\x80\x02}q\x00(X\x05\x00\x00\x00trunc")
    assert main(["convert", "msdm", str(path), "-o", str(tmp_path / "export")]) == 2
    assert "is not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()


def test_torchscript_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(UserInputError, match="TorchScript archive"):
        convert_msdm(path, tmp_path / "export", ExportOptions("tiny"))
    assert not (tmp_path / "export").exists()


def test_bf16_autocast_is_for_the_network_only() -> None:
    _package()
    from mgdm_audio.audio.msdm_net import build_msdm_prior

    torch.manual_seed(0)
    prior = build_msdm_prior("tiny").eval()
    seen: list[torch.dtype] = []
    prior.net.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    x = 0.1 * torch.randn(2, 4, 128)
    with torch.no_grad():
        full = prior(x, 0.3)
        prior.autocast_bf16 = True
        half = prior(x, 0.3)
        prior.autocast_bf16 = False
        with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast (the trainer's) stays on
            prior(x, 0.3)
    assert seen == [torch.float32, torch.bfloat16, torch.bfloat16]
    assert full.dtype == half.dtype == torch.float32
    rel = float((half - full).norm() / (full - 0.2**2 / (0.3**2 + 0.2**2) * x).norm())  # relative to F's part
    assert 0 < rel < 0.05


def test_isdm_product_prior_is_the_four_denoisers_channel_wise(tmp_path: Path) -> None:
    from dataclasses import replace

    from mgdm_audio.audio.priors import load_prior

    nets, paths = [], []
    for k, stem in enumerate(STEMS):
        torch.manual_seed(10 + k)
        net = _audio_diffusion_model(replace(MSDM_CONFIGS["tiny"], in_channels=1))
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(0.1 * torch.randn_like(p))
        paths.append(tmp_path / f"{stem}.ckpt")
        torch.save({"state_dict": {f"model.{key}": v for key, v in net.state_dict().items()}}, paths[-1])
        nets.append(net)
    out = tmp_path / "isdm"
    assert main(["convert", "isdm", *map(str, paths), "-o", str(out), "--architecture", "tiny"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert [m["file"] for m in config["converted_from"]["members"]] == [p.name for p in paths]
    prior = load_prior(out)
    assert prior.downsampling == MSDM_CONFIGS["tiny"].downsampling and len(prior.stems) == 4
    x = 0.1 * torch.randn(2, 4, 128)
    with torch.no_grad():
        for sigma in (1e-2, 0.4, 3.0):
            theirs = torch.cat([n.diffusion.denoise_fn(x[:, k : k + 1], sigma=sigma) for k, n in enumerate(nets)], 1)
            torch.testing.assert_close(prior(x, sigma), theirs, atol=1e-5, rtol=0)
    assert main(["convert", "isdm", str(paths[0]), "-o", str(tmp_path / "bad"), "--architecture", "tiny"]) == 2


def test_restricted_loader_reads_tensor_subclass_forms(tmp_path: Path) -> None:
    """Tensors with Python attributes and parameters come back as plain data (their extra state is dropped)."""
    from mgdm_audio.audio.safe_unpickle import load_checkpoint

    t = torch.arange(3.0)
    t.note = "kept by torch.save through _rebuild_from_type_v2"
    path = tmp_path / "forms.pt"
    torch.save({"t": t, "p": torch.nn.Parameter(torch.ones(2)), "size": torch.Size([2, 3])}, path)
    obj, kind = load_checkpoint(path)
    assert kind == "torch-zip" and obj["size"] == torch.Size([2, 3])
    torch.testing.assert_close(obj["t"], torch.arange(3.0))
    assert isinstance(obj["p"], torch.nn.Parameter) and not hasattr(obj["t"], "note")
