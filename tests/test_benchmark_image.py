"""`mgdm-audio benchmark image` with the tiny test priors on a tiny Fashion-MNIST IDX fixture: JSON rows and
markdown, n/a rows, the average-rank function (ties and n/a), resume from the cache, cache invalidation."""

import gzip
import json
import struct

import numpy as np
import pytest
import torch
from scipy import stats

from mgdm_audio.benchmarks import image as ib
from mgdm_audio.benchmarks.harness import digest
from mgdm_audio.cli import main
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.image import solve as solve_module
from mgdm_audio.image.operators import make_operator
from mgdm_audio.samplers.run import RunSpec
from tests.image_priors_for_tests import (
    export_tiny_latent_prior,
    export_tiny_pixel_prior,
    published_style_kernel_wizard,
    random_kernel_wizard,
)

N_TEST = 7
ROW_KEYS = {"task", "sampler", "preset", "image", "psnr", "ssim", "nfe", "seconds"}
CHEAP = "ddrm:fast,pigdm:fast:n_steps=3,dps:fast:n_steps=3"


def write_idx(path, array, magic):
    """An IDX file: magic (big-endian int), big-endian dimension sizes, then the unsigned bytes (gzipped)."""
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Only t10k files: the benchmark must read nothing else. Image i is a bright box whose size depends on i."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 40, size=(N_TEST, 28, 28))
    for i in range(N_TEST):
        images[i, 4 : 10 + 2 * i, 6:22] = 200 + 5 * i
    write_idx(root / "t10k-images-idx3-ubyte.gz", images, 0x00000803)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(N_TEST) % 10, 0x00000801)
    return root


@pytest.fixture(scope="module")
def pixel_prior(tmp_path_factory):
    return export_tiny_pixel_prior(tmp_path_factory.mktemp("prior") / "tiny-pixel")


def _cli(prior, data_root, tmp_path, *extra, seed=0, samplers=CHEAP, tasks="sr4,blur"):
    args = ["benchmark", "image", "--prior", str(prior), "--tasks", tasks, "--samplers", samplers]
    args += ["--n-images", "2", "--seed", str(seed), "--data-root", str(data_root), "--device", "cpu"]
    args += ["--json", str(tmp_path / "out.json"), "--markdown", str(tmp_path / "out.md"), "--no-progress"]
    assert main([*args, *extra]) == 0
    return json.loads((tmp_path / "out.json").read_text()), (tmp_path / "out.md").read_text()


@pytest.fixture
def solve_calls(monkeypatch):
    """Counts the calls of image.solve.solve made by the benchmark."""
    calls = []
    real = solve_module.solve

    def counting(*args, **kwargs):
        calls.append(kwargs.get("sampler"))
        return real(*args, **kwargs)

    monkeypatch.setattr(solve_module, "solve", counting)
    return calls


def _row(task, sampler, psnr, ssim, image=0):
    return {"status": "ok", "task": task, "sampler": sampler, "preset": "fast", "image": image, "psnr": psnr,
            "ssim": ssim, "nfe": 10, "vjp": 0, "seconds": 0.1}  # fmt: skip


def _na(task, sampler):
    return {**_row(task, sampler, None, None, None), "status": "n/a", "reason": "no SVD", "nfe": None}


def test_average_ranks_with_ties_and_na():
    rows = [
        # t1: a (mean of 9 and 11 = 10) ties b (10), c last
        _row("t1", "a", 9.0, 0.5, 0), _row("t1", "a", 11.0, 0.5, 1),
        _row("t1", "b", 10.0, 0.9), _row("t1", "c", 5.0, 0.1),
        # t2: a and d n/a; c beats b
        _na("t2", "a"), _row("t2", "b", 3.0, 0.2), _row("t2", "c", 4.0, 0.3), _na("t2", "d"),
        # t3: only a applies
        _row("t3", "a", 1.0, 0.0), _na("t3", "b"), _na("t3", "c"), _na("t3", "d"),
        _na("t1", "d"),
    ]  # fmt: skip
    ranks = ib.average_ranks(rows, "psnr")
    assert ranks["a"]["ranks"] == {"t1": 1.5, "t3": 1.0} and ranks["a"]["average_rank"] == pytest.approx(1.25)
    assert ranks["b"]["ranks"] == {"t1": 1.5, "t2": 2.0} and ranks["b"]["average_rank"] == pytest.approx(1.75)
    assert ranks["c"]["ranks"] == {"t1": 3.0, "t2": 1.0} and ranks["c"]["average_rank"] == pytest.approx(2.0)
    assert ranks["d"] == {"average_rank": None, "n_tasks": 0, "of_tasks": 3, "ranks": {}}
    assert [ranks[s]["n_tasks"] for s in "abc"] == [2, 2, 2]
    ssim_ranks = ib.average_ranks(rows, "ssim")
    assert ssim_ranks["b"]["ranks"] == {"t1": 1.0, "t2": 2.0} and ssim_ranks["a"]["ranks"] == {"t1": 2.0, "t3": 1.0}
    assert ib.best_by_rank(ranks) == ["a"] and ib.best_by_rank(ssim_ranks) == ["a", "b"]  # 1.5 each
    assert ib.winners(rows, "psnr") == {"t1": ["a", "b"], "t2": ["c"], "t3": ["a"]}
    assert ib.fractional_ranks({"x": 2.0, "y": 2.0, "z": 2.0, "w": 3.0}) == {"w": 1.0, "x": 3.0, "y": 3.0, "z": 3.0}
    assert ib.fractional_ranks({"x": 0.1, "y": 0.3}, higher_is_better=False) == {"x": 1.0, "y": 2.0}
    summary = ib.summarise(rows)
    assert summary["cells"]["a"]["t1"]["psnr"] == pytest.approx(10.0) and summary["cells"]["a"]["t2"]["status"] == "n/a"


def test_bootstrap_ranks_over_images():
    """Eight images: a sampler ahead on every image is best in every resample; two that swap places image by image
    get the two average ranks they can take; an n/a task is left out of the average; exact ties share the best."""
    rng = np.random.default_rng(0)
    rows = []
    for task in ("t1", "t2"):
        for image in range(8):
            noise = rng.normal(0, 1)
            rows += [
                _row(task, "top", 30.0 + noise, 0.9, image),
                _row(task, "x", 20.0 + noise + (-1) ** image, 0.5, image),
            ]
            rows.append(_row(task, "y", 20.0 + noise - (-1) ** image + 0.01, 0.5, image))
    rows.append(_na("t3", "y"))
    rows += [_row("t3", s, v, 0.5, i) for s, v in (("top", 25.0), ("x", 24.0)) for i in range(8)]
    boot = ib.bootstrap_ranks(rows, "psnr", resamples=300, seed=1)
    assert boot["top"] == {"lo": 1.0, "hi": 1.0, "best_share": 1.0, "images": 8, "resamples": 300, "seed": 1}
    assert boot["x"]["best_share"] == boot["y"]["best_share"] == 0.0
    # x - y on t1 and t2 is +2 on even images and -2 on odd ones, less 0.01: x is ahead on both tasks exactly when
    # a resample holds more even images (probability 0.36); then x averages (2 + 2 + 2) / 3 and y (3 + 3) / 2 (n/a
    # on t3), else x (3 + 3 + 2) / 3 and y (2 + 2) / 2
    assert boot["x"]["lo"] == pytest.approx(2.0) and boot["x"]["hi"] == pytest.approx(8 / 3)
    assert boot["y"]["lo"] == pytest.approx(2.0) and boot["y"]["hi"] == pytest.approx(3.0)
    assert boot == ib.bootstrap_ranks(rows, "psnr", 300, 1)
    tied = [_row("t1", s, 10.0, 0.5, i) for s in ("p", "q") for i in range(3)]
    assert ib.bootstrap_ranks(tied, "psnr", resamples=50)["p"]["best_share"] == pytest.approx(0.5)


def test_paired_by_image_averages_the_common_tasks_then_pairs_images():
    """a - b per image over the tasks both run (t2 is n/a for b, so it is left out of the pair): differences 1, 3, 2
    over three images -> mean 2, sd 1, t interval 2 +- t_{0.975,2} / sqrt(3); a higher on all three."""
    rows = []
    for image, (va, vb) in enumerate(((11.0, 10.0), (13.0, 10.0), (12.0, 10.0))):
        rows += [_row("t1", "a", va, 0.5, image), _row("t1", "b", vb, 0.4, image)]
        rows += [_row("t2", "a", 0.0, 0.5, image)]  # would pull a's mean down if t2 were counted
    rows.append(_na("t2", "b"))
    pair = ib.paired_by_image(rows, "a", "psnr")["b"]
    half = stats.t.ppf(0.975, 2) / np.sqrt(3)
    assert pair["tasks"] == ["t1"] and pair["images"] == 3 and pair["higher_on"] == 3
    assert pair["difference"]["mean"] == pytest.approx(2.0)
    assert (pair["difference"]["lo"], pair["difference"]["hi"]) == pytest.approx((2.0 - half, 2.0 + half))
    assert ib.summarise(rows)["paired"]["ours"] == "a"
    # higher on all three images, yet the t interval over three holds 0: "level with", not "ahead"
    assert "| a level with b |" in "\n".join(ib._paired_lines(ib.summarise(rows)["paired"]))
    # the first --samplers entry is the reference even where it cannot run: then nothing is paired, nothing printed
    nowhere = ib.summarise([_na("t2", "b"), *rows])["paired"]
    assert nowhere["ours"] == "b" and nowhere["psnr"]["a"]["tasks"] == ["t1"]
    assert ib.summarise([_na("t1", "z"), *rows])["paired"] == {"ours": "z", "psnr": {}, "ssim": {}}
    # a diverged run scores None: that image drops out of the pair instead of breaking the summary
    diverged = [{**r, "psnr": None} if (r["sampler"], r["task"], r["image"]) == ("b", "t1", 2) else r for r in rows]
    assert ib.paired_by_image(diverged, "a", "psnr")["b"]["images"] == 2
    one = ib._paired_lines(ib.summarise([r for r in rows if r["image"] == 0])["paired"])
    assert "| +1.00 [n = 1] |" in "\n".join(one) and "no interval (1 image)" in "\n".join(one)


def test_markdown_sentences_come_from_the_numbers():
    rows = [_row("t1", "p", 30.0, 0.9), _row("t1", "q", 20.0, 0.5), _row("t1", "r", 25.0, 0.4)]
    rows += [_na("t2", "p"), _row("t2", "q", 12.0, 0.3), _row("t2", "r", 11.0, 0.2)]
    settings = {"prior": "toy", "prior_kind": "pixel", "weights_sha256": "ab" * 32, "image_shape": [1, 8, 8],
                "n_images": 1, "seed": 3, "sigma_y": 0.05, "batch": 1, "device": "cpu", "versions": {"torch": "x"},
                "tasks": ["t1", "t2"], "samplers": [{"label": s, "sampler_preset": "fast"} for s in "pqr"]}  # fmt: skip
    text = ib.markdown_report(ib.payload(rows, settings), date="2000-01-01")
    assert "Best by average PSNR rank: **p**, 1.00 over 1 of 2 tasks." in text
    assert "among the samplers run on all tasks: **q**, **r** (tied), 2.00 over 2 of 2 tasks." in text
    assert "t1: p (30.00 dB); t2: q (12.00 dB)" in text and "| p | **30.00** | n/a | 1.00 | 1.00 | 1 of 2 |" in text
    assert "SSIM rank among the samplers run on all tasks: **q**, 1.50 over 2 of 2 tasks." in text
    assert "2000-01-01" in text and "k of 2" in text and "1 image of Fashion-MNIST" in text
    assert "Bootstrap over the 1 image (2000 resamples" in text  # one image: every resample is the same
    assert "| p | 1.00 [1.00, 1.00] | 100 % | 1.00 [1.00, 1.00] | 100 % |" in text
    assert "| q | 2.00 [2.00, 2.00] | 0 % | 1.50 [1.50, 1.50] | 0 % |" in text


def test_cli_writes_rows_na_markdown_and_plot(pixel_prior, data_root, tmp_path):
    doc, text = _cli(pixel_prior, data_root, tmp_path, "--plot", str(tmp_path / "grid.png"), "--batch", "1")
    ok = [r for r in doc["rows"] if r["status"] == "ok"]
    na = [r for r in doc["rows"] if r["status"] == "n/a"]
    assert all(ROW_KEYS <= set(r) for r in doc["rows"])
    assert {(r["task"], r["method"]) for r in na} == {("blur", "ddrm"), ("blur", "pigdm")}
    assert all("SVD" in r["reason"] for r in na) and all(r["psnr"] is None for r in na)
    assert len(ok) == 2 * 4  # sr4: 3 samplers, blur: dps; 2 images each
    assert all(np.isfinite(r["psnr"]) and -1 <= r["ssim"] <= 1 and r["nfe"] > 0 for r in ok)
    assert {r["nfe"] for r in ok if r["method"] == "dps"} == {2}  # 3 steps -> 2 network calls per chain
    images = doc["settings"]["images"]
    assert len(set(images)) == 2 and all(0 <= i < N_TEST for i in images)
    assert [r["image"] for r in ok[:2]] == images
    assert doc["summary"]["psnr_rank"]["ddrm:fast"]["n_tasks"] == 1
    assert doc["summary"]["psnr_rank"]["dps:fast:n_steps=3"]["ranks"]["blur"] == 1.0
    assert "| ddrm:fast |" in text and "n/a" in text and "1 of 2" in text and "2 of 2" in text
    assert "Best by average PSNR rank" in text and "Winner per task by mean PSNR" in text
    assert doc["settings"]["weights_sha256"][:12] in text and "blur: dps:fast:n_steps=3" in text
    assert (tmp_path / "grid.png").stat().st_size > 1000


def test_resume_does_no_sampling_and_seed_invalidates(pixel_prior, data_root, tmp_path, solve_calls):
    cache = ["--cache", str(tmp_path / "cache")]
    first, _ = _cli(pixel_prior, data_root, tmp_path, *cache, tasks="sr4,blur")
    assert len(solve_calls) == 4  # sr4: ddrm, pigdm, dps; blur: dps
    second, _ = _cli(pixel_prior, data_root, tmp_path, *cache, tasks="sr4,blur")
    assert len(solve_calls) == 4 and second == first
    other_seed, _ = _cli(pixel_prior, data_root, tmp_path, *cache, tasks="sr4,blur", seed=1)
    assert len(solve_calls) == 8 and other_seed["rows"] != first["rows"]
    # a cache file made with other settings (here: another batch size) is recomputed, not reused
    _cli(pixel_prior, data_root, tmp_path, *cache, "--batch", "1", tasks="sr4", samplers="dps:fast:n_steps=3")
    assert len(solve_calls) == 10


def test_killed_run_continues_from_finished_batches(pixel_prior, data_root, tmp_path, monkeypatch):
    calls = []
    real = solve_module.solve

    def dies_on_second_batch(*args, **kwargs):
        calls.append(kwargs["seed"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(solve_module, "solve", dies_on_second_batch)
    extra = ["--cache", str(tmp_path / "cache"), "--batch", "1"]
    args = ["benchmark", "image", "--prior", str(pixel_prior), "--tasks", "sr4", "--samplers", "dps:fast:n_steps=3"]
    args += ["--n-images", "2", "--data-root", str(data_root), "--device", "cpu", "--no-progress"]
    assert main([*args, *extra]) == 130  # interrupted after the first batch was cached
    doc, _ = _cli(pixel_prior, data_root, tmp_path, *extra, tasks="sr4", samplers="dps:fast:n_steps=3")
    assert len(calls) == 3 and calls[2] == calls[1] != calls[0]  # only the second batch was sampled again
    assert len(doc["rows"]) == 2


def test_latent_prior_and_measurements_shared_by_samplers(data_root, tmp_path, monkeypatch):
    prior = export_tiny_latent_prior(tmp_path / "tiny-latent")
    seen = []
    real = solve_module.solve

    def recording(prior_, op, y, **kwargs):
        seen.append(y.clone())
        return real(prior_, op, y, **kwargs)

    monkeypatch.setattr(solve_module, "solve", recording)
    doc, _ = _cli(
        prior, data_root, tmp_path, tasks="inpainting_center", samplers="ddrm,dps:fast:n_steps=3,reddiff:fast:n_steps=3"
    )
    assert doc["settings"]["prior_kind"] == "latent" and doc["settings"]["sample_shape"] != [1, 16, 16]
    assert [r["status"] for r in doc["rows"] if r["method"] == "ddrm"] == ["n/a"]  # DecodedOperator is not linear
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])  # every sampler sees the same measurements


def test_images_are_a_seeded_permutation_of_test_fitted_to_the_prior(data_root):
    idx0, img0 = ib.load_test_images(4, 0, (1, 16, 16), data_root)
    assert ib.load_test_images(4, 0, (1, 16, 16), data_root)[0] == idx0 and len(set(idx0)) == 4
    assert ib.load_test_images(4, 1, (1, 16, 16), data_root)[0] != idx0
    assert ib.load_test_images(2, 0, (1, 16, 16), data_root)[0] == idx0[:2]  # a prefix of the same order
    assert img0.shape == (4, 1, 16, 16) and img0.min() >= -1 and img0.max() <= 1
    _, big = ib.load_test_images(2, 0, (3, 40, 40), data_root)
    _, same = ib.load_test_images(2, 0, (1, 32, 32), data_root)
    assert big.shape == (2, 3, 40, 40) and torch.equal(big[:, 1, 6:34, 6:34], same[:, 0, 2:30, 2:30])
    assert torch.all(big[:, :, :6] == -1)
    with pytest.raises(UserInputError, match="n-images"):
        ib.load_test_images(N_TEST + 1, 0, (1, 16, 16), data_root)
    with pytest.raises(UserInputError, match="tasks"):
        ib.parse_tasks("sr4,sr5")
    with pytest.raises(UserInputError, match="unique"):
        ib.parse_samplers("dps,dps", "fast")
    assert ib.parse_samplers("mgdm,dps:paper:gamma=0.5", "fast")[1] == RunSpec(
        "dps", "paper", (("gamma", 0.5),), "dps:paper:gamma=0.5"
    )


@pytest.mark.parametrize("task", ["outpainting_half", "sr16", "phase_retrieval", "jpeg2"])
def test_measurement_visual_is_an_image(task):
    op = make_operator(task, (1, 16, 16))
    x = torch.rand(1, 1, 16, 16) * 2 - 1
    picture = ib.measurement_visual(op, op(x), (1, 16, 16))
    assert picture.shape == (1, 16, 16) and picture.min() >= -1 and picture.max() <= 1


def test_kernel_wizard_weights_are_recorded_and_key_the_nonlinear_blur_cache(pixel_prior, data_root, tmp_path):
    weights = published_style_kernel_wizard(tmp_path / "kw.pth", random_kernel_wizard())
    common = dict(
        tasks="sr4,nonlinear_blur", samplers="dps:fast:n_steps=3", n_images=2, data_root=data_root, device="cpu"
    )
    stand_in = ib.prepare(pixel_prior, **common)
    bkse = ib.prepare(pixel_prior, kernel_wizard=weights, **common)
    assert stand_in.settings["nonlinear_blur"].startswith("stand-in")
    assert bkse.settings["nonlinear_blur"].startswith("bkse KernelWizard, weights sha256 ")
    assert type(bkse.operators["nonlinear_blur"]).__name__ == "KernelWizardBlur"
    run = bkse.runs[0]
    hashes = {}
    hashes["a"] = {t: digest(ib.cell_key(stand_in, t, run, 0)) for t in ("sr4", "nonlinear_blur")}
    hashes["b"] = {t: digest(ib.cell_key(bkse, t, run, 0)) for t in ("sr4", "nonlinear_blur")}
    assert hashes["a"]["sr4"] == hashes["b"]["sr4"]  # other tasks keep their cached rows
    assert hashes["a"]["nonlinear_blur"] != hashes["b"]["nonlinear_blur"]
