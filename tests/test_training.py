"""The trainer: resume, DDP equivalence, export/load, recipes, generation (tiny model, synthetic data)."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch.utils.data import Dataset

from mgdm_audio.audio.priors import generate, load_prior
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.training import FactorySpec, Recipe, TrainSettings, ValidationSettings, load_recipe, train
from mgdm_audio.training.checkpoint import CHECKPOINT_NAME

ROOT = Path(__file__).resolve().parents[1]
LENGTH = 128


class SyntheticStems(Dataset):
    """Deterministic 4-stem items: sines whose frequency and phase depend on (index, epoch)."""

    def __init__(self, n_items: int = 24, seed: int = 0) -> None:
        self.n_items, self.seed, self.epoch = n_items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_items

    def __getitem__(self, index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch * 1009 + int(index))
        t = torch.arange(LENGTH, dtype=torch.float32)
        freq = 0.02 + 0.2 * torch.rand(4, 1, generator=g)
        phase = 6.28 * torch.rand(4, 1, generator=g)
        return 0.3 * torch.sin(freq * t + phase)


def _recipe(**training: object) -> Recipe:
    settings = dict(batch_size=4, lr=1e-3, ema_decay=0.9, checkpoint_every=0, validate_every=0, log_every=1)
    settings.update(training)
    return Recipe(
        name="tiny-test",
        model=FactorySpec("mgdm_audio.audio.model:build_prior", {"config": "tiny"}),
        data=FactorySpec(SyntheticStems, {"n_items": 24}),
        training=TrainSettings(**settings),  # type: ignore[arg-type]
        validation=ValidationSettings(data=FactorySpec(SyntheticStems, {"n_items": 4, "seed": 9}), items=4),
        metadata={"stems": ["bass", "drums", "guitar", "piano"], "sample_rate": 22050, "chunk_samples": LENGTH},
        text="name: tiny-test\n",
    )


def test_resume_continues_with_identical_losses(tmp_path: Path) -> None:
    recipe = _recipe(checkpoint_every=2)
    full = train(recipe, tmp_path / "full", max_steps=8, progress=False)
    first = train(recipe, tmp_path / "cut", max_steps=5, progress=False)  # 6 steps per epoch: crosses an epoch
    second = train(recipe, tmp_path / "cut", max_steps=8, resume=True, progress=False)
    assert [s for s, _ in second.losses] == [6, 7, 8]
    assert first.losses + second.losses == full.losses
    a = load_file(str(full.export_dir / "model.safetensors"))
    b = load_file(str(second.export_dir / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserInputError, match="--resume"):
        train(recipe, tmp_path / "cut", max_steps=9, progress=False)


def test_losses_fall_and_validation_bands(tmp_path: Path) -> None:
    result = train(_recipe(validate_every=10), tmp_path / "run", max_steps=30, progress=False)
    losses = [v for _, v in result.losses]
    assert sum(losses[-5:]) < sum(losses[:5])
    assert len(result.validation) == 5 and all(v > 0 for v in result.validation.values())
    log = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert sum('"validation"' in line for line in log) == 3


def _ddp_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        train(_recipe(), out, max_steps=3, progress=False)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_single_process(tmp_path: Path) -> None:
    train(_recipe(), tmp_path / "single", max_steps=3, progress=False)
    # fork: the children skip re-importing torch (spawn costs ~15 s on 2 shared cores)
    mp.start_processes(
        _ddp_worker, args=(_free_port(), str(tmp_path / "ddp")), nprocs=2, join=True, start_method="fork"
    )
    a = torch.load(tmp_path / "single" / CHECKPOINT_NAME, weights_only=True)
    b = torch.load(tmp_path / "ddp" / CHECKPOINT_NAME, weights_only=True)
    assert a["step"] == b["step"] == 3
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], atol=2e-5, rtol=1e-4)
    assert any(not torch.equal(a["model"][k], single_init) for k, single_init in _init_state().items())


def _init_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return _recipe().model.build().state_dict()


def test_export_load_round_trip_and_generate(tmp_path: Path) -> None:
    result = train(_recipe(), tmp_path / "run", max_steps=2, progress=False)
    exported = result.export_dir
    assert {p.name for p in exported.iterdir()} == {"model.safetensors", "config.json", "MODEL_CARD.md"}
    prior = load_prior(exported)
    ema = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)["ema"]
    state = prior.module.state_dict()
    assert set(state) == set(ema) and all(torch.equal(state[k], ema[k]) for k in ema)
    assert prior.stems == ("bass", "drums", "guitar", "piano") and prior.sample_rate == 22050
    assert "tiny-test" in (exported / "MODEL_CARD.md").read_text()
    a = generate(prior, 2, 100 / 22050, seed=5, steps=5)
    b = generate(prior, 2, 100 / 22050, seed=5, steps=5)
    assert a.shape == (2, 4, 100) and torch.equal(a, b) and torch.isfinite(a).all()


def test_corrupt_and_mismatched_weights_give_clear_errors(tmp_path: Path) -> None:
    exported = train(_recipe(), tmp_path / "run", max_steps=1, progress=False).export_dir
    weights = exported / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserInputError, match="safetensors"):
        load_prior(exported)
    weights.write_bytes(good)
    config = (exported / "config.json").read_text()
    (exported / "config.json").write_text(config.replace('"embedding_features": 32', '"embedding_features": 48'))
    with pytest.raises(UserInputError, match="does not match"):
        load_prior(exported)
    with pytest.raises(UserInputError, match="unknown prior"):
        load_prior("no-such-prior")


def test_recipes_parse_and_factories_are_restricted(tmp_path: Path) -> None:
    small = load_recipe(ROOT / "recipes/prior/slakh-style-small.yaml", data_root=str(tmp_path))
    assert small.data.kwargs["root"] == str(tmp_path) and small.validation.data.kwargs["root"] == str(tmp_path)
    assert small.training.batch_size == 8 and small.training.betas == (0.9, 0.99)
    assert load_recipe(ROOT / "recipes/prior/msdm.yaml").training.bf16
    stage2 = load_recipe(ROOT / "recipes/prior/slakh-style-small-topskip.yaml")
    assert stage2.model.kwargs["top_skip"] and stage2.training.init_from == "runs/slakh-style-small/export"
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {factory: 'os:system', kwargs: {command: ls}}\ndata: {factory: 'mgdm_audio.x:y'}\n")
    with pytest.raises(UserInputError, match="only mgdm_audio modules"):
        load_recipe(bad).model.build()
    bad.write_text(
        "model: {factory: 'mgdm_audio.audio.model:build_prior'}\ndata: {factory: 'a:b'}\ntraining: {lr2: 1}\n"
    )
    with pytest.raises(UserInputError, match="unknown keys"):
        load_recipe(bad)


def test_export_only_equals_the_end_of_training_export(tmp_path: Path) -> None:
    import json

    from mgdm_audio.training import export_checkpoint
    from mgdm_audio.training.__main__ import main

    recipe = _recipe(validate_every=2)
    result = train(recipe, tmp_path / "run", max_steps=3, progress=False)
    checkpoint_bytes = (tmp_path / "run" / CHECKPOINT_NAME).read_bytes()
    exported, step = export_checkpoint(recipe, tmp_path / "run", tmp_path / "snapshot")
    assert step == 3 and (tmp_path / "run" / CHECKPOINT_NAME).read_bytes() == checkpoint_bytes  # read-only
    for name in ("model.safetensors", "config.json", "MODEL_CARD.md"):
        assert (exported / name).read_bytes() == (result.export_dir / name).read_bytes(), name
    config = json.loads((exported / "config.json").read_text())
    assert config["training_steps"] == 3 and config["validation_step"] == 3 and len(config["validation"]) == 5
    assert "| training steps | 3 |" in (exported / "MODEL_CARD.md").read_text()
    with pytest.raises(UserInputError, match="another version"):
        export_checkpoint(_recipe_with_text("name: edited\n"), tmp_path / "run", tmp_path / "other")
    yaml_recipe = ROOT / "recipes/prior/slakh-style-small.yaml"
    assert main([str(yaml_recipe), "--out", str(tmp_path / "empty"), "--export-only"]) == 2  # no checkpoint
    assert main([str(yaml_recipe), "--out", str(tmp_path / "run"), "--export-only", "--resume"]) == 2


def _recipe_with_text(text: str) -> Recipe:
    recipe = _recipe()
    recipe.text = text
    return recipe


def test_spectral_skip_is_fitted_on_a_fresh_run_kept_on_resume_and_exported(tmp_path: Path) -> None:
    recipe = _recipe(checkpoint_every=1)
    skip = {"bins": 33, "pad": 16, "fit_items": 8}
    recipe.model = FactorySpec("mgdm_audio.audio.model:build_prior", {"config": "tiny", "spectral_skip": skip})
    train(recipe, tmp_path / "run", max_steps=2, progress=False)
    fitted = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)["model"]["spectral.psd"]
    assert fitted.shape == (4, 33) and not torch.allclose(fitted, torch.full_like(fitted, 0.05**2))
    # the sines of SyntheticStems peak below 0.22 rad/sample (0.07 of Nyquist): the PSD does too
    assert (fitted.argmax(dim=1) < 0.1 * 32).all()
    resumed = train(recipe, tmp_path / "run", max_steps=3, resume=True, progress=False)
    prior = load_prior(resumed.export_dir)
    assert prior.module.spectral is not None and torch.equal(prior.module.spectral.psd, fitted)


def test_warm_start_with_a_new_zero_initialised_block_reproduces_the_source(tmp_path: Path) -> None:
    import json

    source = train(_recipe(), tmp_path / "stage1", max_steps=2, progress=False).export_dir
    recipe = _recipe(init_from=str(source), lr=0.0)  # lr 0: the exported EMA stays the warm start exactly
    recipe.model = FactorySpec("mgdm_audio.audio.model:build_prior", {"config": "tiny", "top_skip": True})
    result = train(recipe, tmp_path / "stage2", max_steps=1, progress=False)
    old, new = load_prior(source).module, load_prior(result.export_dir).module
    assert new.net.top_block is not None and old.net.top_block is None
    x, sigma = torch.randn(3, 4, LENGTH, generator=torch.Generator().manual_seed(0)), torch.tensor([0.01, 0.1, 1.0])
    assert torch.equal(new(x, sigma), old(x, sigma))  # the zero-initialised top block adds exactly 0
    config = json.loads((result.export_dir / "config.json").read_text())
    init = config["initialised_from"]
    assert init["training_steps"] == 2 and init["new"] and all(k.startswith("net.top_block.") for k in init["new"])
    assert "initialised from" in (result.export_dir / "MODEL_CARD.md").read_text()
    # a source that does not fit (other widths) and a missing folder: one clear error each
    wide = _recipe(init_from=str(source))
    wide.model = FactorySpec("mgdm_audio.audio.model:build_prior", {"config": "tiny", "embedding_features": 48})
    with pytest.raises(UserInputError, match="does not fit"):
        train(wide, tmp_path / "wide", max_steps=1, progress=False)
    with pytest.raises(UserInputError, match="no folder"):
        train(_recipe(init_from=str(tmp_path / "nowhere")), tmp_path / "nowhere-run", max_steps=1, progress=False)


def test_the_top_skip_lifts_the_rank_of_the_small_networks_output() -> None:
    """Without the top skip every path to the output passes the first strided level, channels[1] = 128 values per
    64 samples of 4 stems, so the Jacobian of F (4 T x 4 T) has rank <= T / 64 * 128 = 2 T: measured on a generic
    `small`-shaped network (zero-initialised layers drawn at random) over T = 512 samples."""
    from mgdm_audio.audio.model import MultiStemUNet, get_config

    torch.manual_seed(0)
    ranks = {}
    for top in (False, True):
        net = MultiStemUNet(get_config("small", top_skip=top)).eval()
        for p in net.parameters():  # no zero layers: a generic network of this shape
            if p.ndim > 1 and not p.abs().sum():
                torch.nn.init.normal_(p, std=0.02)
        x = 0.05 * torch.randn(1, 4, 512)
        emb = torch.tensor([0.25 * math.log(0.01)])
        jac = torch.autograd.functional.jacobian(lambda v, f=net, e=emb: f(v, e).reshape(-1), x, vectorize=True)
        ranks[top] = int(torch.linalg.matrix_rank(jac.reshape(4 * 512, -1).double(), rtol=1e-5))  # float32 noise
    assert ranks[False] <= 1024 and ranks[True] > 1500, ranks


def test_sigma_uniform_fraction_mixes_a_log_uniform_draw_and_keeps_the_old_streams() -> None:
    from mgdm_audio.training.trainer import step_randomness

    base = TrainSettings(seed=5, sigma_log_mean=-3.0, sigma_log_std=1.0)
    mixed = TrainSettings(seed=5, sigma_uniform_fraction=0.5, sigma_uniform_range=[5e-4, 20.0])
    s0, n0, _ = step_randomness(base, 3, (4096, 1, 2))
    s1, n1, _ = step_randomness(mixed, 3, (4096, 1, 2))
    assert torch.equal(n0, n1)  # the noise stream is unchanged
    same = s0 == s1
    assert 0.4 < float(same.float().mean()) < 0.6  # about half keep their log-normal draw
    uniform = s1[~same].log()
    assert float(uniform.min()) >= math.log(5e-4) and float(uniform.max()) <= math.log(20.0)
    # log-uniform: a quarter of the range holds about a quarter of the draws (N(-3, 1) would put ~0 % above ln 0.4)
    assert 0.18 < float((uniform > math.log(20.0) - 0.25 * (math.log(20.0) - math.log(5e-4))).float().mean()) < 0.32
    for bad in (
        dict(sigma_uniform_fraction=1.5),
        dict(sigma_uniform_fraction=0.5),
        dict(sigma_uniform_fraction=0.5, sigma_uniform_range=[2.0, 1.0]),
    ):
        with pytest.raises(UserInputError):
            TrainSettings(**bad)
