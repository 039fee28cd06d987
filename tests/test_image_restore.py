"""``mgdm-audio restore``: every task end to end on the tiny priors, input conversions, and clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgdm_audio.cli import main
from mgdm_audio.core.errors import UserInputError
from mgdm_audio.image import restore as restore_module
from mgdm_audio.image.operators import TASKS, make_operator
from mgdm_audio.image.restore import (
    IMAGE_SHAPED_TASKS,
    MEASUREMENT_ONLY_TASKS,
    SELECTION_TASKS,
    SUPER_RESOLUTION_TASKS,
    InputFile,
    figure_path,
    read_input,
    restore,
)
from tests.image_priors_for_tests import IMAGE_SHAPE, export_tiny_latent_prior, export_tiny_pixel_prior

SIZE = IMAGE_SHAPE[1]


@pytest.fixture(scope="module")
def priors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("priors")
    return {"pixel": export_tiny_pixel_prior(root / "pixel"), "latent": export_tiny_latent_prior(root / "latent")}


def _grey_image(path: Path, height: int = SIZE, width: int = SIZE) -> Path:
    rows, cols = np.mgrid[0:height, 0:width]
    Image.fromarray(((rows * 7 + cols * 11) % 256).astype(np.uint8)).save(path)
    return path


def _rgb_image(path: Path, height: int, width: int) -> Path:
    rows, cols = np.mgrid[0:height, 0:width]
    rgb = np.stack([cols * 255 // width, rows * 255 // height, np.full_like(rows, 90)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict | None, str]:
    """Run the CLI with ``--json``; returns (exit code, summary or None, stderr)."""
    code = main(["restore", *argv, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_task_groups_partition_the_tasks():
    groups = [IMAGE_SHAPED_TASKS, SELECTION_TASKS, tuple(SUPER_RESOLUTION_TASKS), MEASUREMENT_ONLY_TASKS]
    assert sorted(t for g in groups for t in g) == sorted(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_every_task_runs_end_to_end_on_the_pixel_prior(task, priors, tmp_path, capsys):
    image = _grey_image(tmp_path / "clean.png")
    out = tmp_path / "out" / "fig.png"
    argv = [str(image), "--task", task, "--prior", str(priors["pixel"]), "--preset", "fast", "--degrade"]
    code, summary, err = _run([*argv, "--seed", "1", "-o", str(out)], capsys)
    assert code == 0, err
    assert summary["task"] == task and summary["sampler"] == "mgdm" and summary["preset"] == "fast"
    assert summary["panels"] == ["clean", "measurement", "restoration"]
    assert summary["nfe"] > 0 and summary["vjp"] > 0 and summary["seconds"] > 0
    assert math.isfinite(summary["psnr"]) and -1.0 <= summary["ssim"] <= 1.0
    assert summary["notes"] == []  # a 16x16 grey image needs no conversion
    assert _files(out.parent) == ["fig.png", "fig_figure.png"]
    restored = Image.open(out)
    assert restored.size == (SIZE, SIZE) and restored.mode == "L"
    figure = Image.open(figure_path(out))
    assert figure.size[0] > 2 * figure.size[1]  # three panels in a row


@pytest.mark.parametrize("task", ["sr4", "outpainting_half"])
def test_latent_prior_restores(task, priors, tmp_path, capsys):
    image = _grey_image(tmp_path / "clean.png")
    out = tmp_path / "fig.png"
    argv = [str(image), "--task", task, "--prior", str(priors["latent"]), "--preset", "fast", "--degrade"]
    code, summary, err = _run([*argv, "-o", str(out)], capsys)
    assert code == 0, err
    assert summary["prior"] == "tiny-latent" and math.isfinite(summary["psnr"])
    assert Image.open(out).size == (SIZE, SIZE)


@pytest.mark.parametrize(("kind", "resolved"), [("pixel", "image"), ("latent", "image-latent")])
def test_default_preset_resolves_per_prior_kind_and_is_recorded(kind, resolved, priors, tmp_path, capsys):
    """`--preset default` runs the sampler's point chosen for the prior's kind (DPS has an `image-latent` one)."""
    image = _grey_image(tmp_path / "clean.png")
    argv = [str(image), "--task", "sr4", "--prior", str(priors[kind]), "--sampler", "dps", "--degrade"]
    code, summary, err = _run([*argv, "--preset", "default", "-o", str(tmp_path / "fig.png")], capsys)
    assert code == 0, err
    assert (summary["preset"], summary["sampler_preset"]) == ("default", resolved)


def test_two_samples_add_mean_and_spread_panels_and_a_progress_bar(priors, tmp_path, capsys):
    image = _grey_image(tmp_path / "clean.png")
    out = tmp_path / "fig.png"
    argv = [str(image), "--task", "blur", "--prior", str(priors["pixel"]), "--preset", "fast", "--degrade"]
    code = main(["restore", *argv, "--n-samples", "2", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "blur: mgdm (fast), K=2" in captured.out and "NFE" in captured.out and "VJP" in captured.out
    assert "restoring (mgdm)" in captured.err and "100%" in captured.err  # the tqdm bar ran to the end
    width, height = Image.open(figure_path(out)).size
    assert width / height == pytest.approx(2.8 * 5 / 3.4, rel=0.02)  # clean, y, sample, mean, spread
    code, summary, _ = _run([*argv, "--n-samples", "2", "-o", str(tmp_path / "again.png")], capsys)
    assert summary["panels"] == ["clean", "measurement", "restoration", "mean", "spread"]
    assert set(summary["scores"]) == {"measurement", "sample", "mean"}
    assert summary["psnr"] == summary["scores"]["mean"]["psnr"]  # the written image is the mean
    first = np.asarray(Image.open(out))
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "again.png")))  # same seed, same output


def test_rgb_input_of_another_size_is_converted_with_notes(priors, tmp_path, capsys):
    image = _rgb_image(tmp_path / "photo.png", height=24, width=20)
    out = tmp_path / "fig.png"
    argv = [str(image), "--task", "jpeg2", "--prior", str(priors["pixel"]), "--preset", "fast", "--degrade"]
    code, summary, err = _run([*argv, "-o", str(out)], capsys)
    assert code == 0, err
    assert "note: converted the RGB image to greyscale" in err
    assert "note: resized the image from 20x24 to 16x16 pixels" in err
    assert len(summary["notes"]) == 2


def test_sr4_accepts_a_low_resolution_measurement(priors, tmp_path, capsys):
    low = _grey_image(tmp_path / "low.png", SIZE // 4, SIZE // 4)
    out = tmp_path / "fig.png"
    code, summary, err = _run([str(low), "--task", "sr4", "--prior", str(priors["pixel"]), "--preset", "fast",
                               "-o", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    assert summary["notes"] == [] and summary["psnr"] is None  # used as it is; no clean image, no scores
    assert summary["panels"] == ["measurement", "restoration"]
    assert Image.open(out).size == (SIZE, SIZE)


def test_phase_retrieval_accepts_a_npy_measurement(priors, tmp_path, capsys):
    op = make_operator("phase_retrieval", IMAGE_SHAPE)
    y = op(torch.zeros(1, *IMAGE_SHAPE))[0].numpy()  # (1, 24, 24)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "fig.png"
    argv = [str(tmp_path / "y.npy"), "--task", "phase_retrieval", "--prior", str(priors["pixel"]), "--preset", "fast"]
    code, summary, err = _run([*argv, "-o", str(out)], capsys)
    assert code == 0, err
    assert summary["panels"] == ["measurement", "restoration"]


def _bad_cases(tmp: Path, prior: Path) -> dict[str, tuple[list[str], str]]:
    image = _grey_image(tmp / "clean.png")
    (tmp / "broken.png").write_bytes(b"not a png at all")
    np.save(tmp / "wrong.npy", np.zeros((3, 5)))
    base = ["--prior", str(prior), "--preset", "fast"]
    return {
        "unreadable": ([str(tmp / "broken.png"), "--task", "blur", *base, "--degrade"], "cannot be read as an image"),
        "missing": ([str(tmp / "nothing.png"), "--task", "blur", *base, "--degrade"], "no such file"),
        "task": ([str(image), "--task", "deblur", *base, "--degrade"], "unknown --task 'deblur'"),
        "prior": ([str(image), "--task", "blur", "--prior", str(tmp / "no-prior"), "--degrade"], "unknown image prior"),
        "sampler": ([str(image), "--task", "blur", *base, "--sampler", "magic"], "unknown sampler 'magic'"),
        "preset": ([str(image), "--task", "blur", "--prior", str(prior), "--preset", "slow"], "no preset 'slow'"),
        "ddrm_on_blur": ([str(image), "--task", "blur", *base, "--sampler", "ddrm", "--degrade"], "SVD"),
        "phase_retrieval_image": ([str(image), "--task", "phase_retrieval", *base], "add --degrade"),
        "npy_shape": ([str(tmp / "wrong.npy"), "--task", "blur", *base], "has shape (3, 5)"),
        "n_samples": ([str(image), "--task", "blur", *base, "--n-samples", "0"], "--n-samples"),
        "device": ([str(image), "--task", "blur", *base, "--device", "tpu"], "--device"),
    }


@pytest.mark.parametrize(
    "case",
    ["unreadable", "missing", "task", "prior", "sampler", "preset", "ddrm_on_blur", "phase_retrieval_image",
     "npy_shape", "n_samples", "device"],
)  # fmt: skip
def test_bad_inputs_exit_2_with_one_sentence_and_write_nothing(case, priors, tmp_path, capsys):
    argv, message = _bad_cases(tmp_path, priors["pixel"])[case]
    out = tmp_path / "out" / "fig.png"
    code = main(["restore", *argv, "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.startswith("mgdm-audio: error: ") and "Traceback" not in err
    assert _files(out.parent) == []


def test_output_must_be_png_and_must_not_overwrite_the_input(priors, tmp_path):
    image = _grey_image(tmp_path / "in.png")
    for out, message in [(tmp_path / "fig.jpg", ".png"), (image, "overwrite the input")]:
        with pytest.raises(UserInputError, match=message):
            restore(image, out, "blur", priors["pixel"], preset="fast", degrade=True)


def test_a_failure_while_writing_leaves_no_files(priors, tmp_path, monkeypatch):
    def broken_plot(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(restore_module, "plot_panels", broken_plot)
    image = _grey_image(tmp_path / "clean.png")
    with pytest.raises(RuntimeError, match="disk full"):
        restore(image, tmp_path / "out" / "fig.png", "sr16", priors["pixel"], preset="fast", degrade=True)
    assert not (tmp_path / "out").exists()  # nor the folder it would have made


def test_existing_outputs_are_refused_before_any_work_unless_force(priors, tmp_path, capsys):
    image = _grey_image(tmp_path / "clean.png")
    out = tmp_path / "restored.png"  # the README's name: restored.png and restored_figure.png
    argv = [str(image), "--task", "sr4", "--prior", str(priors["pixel"]), "--preset", "fast", "--degrade"]
    figure_path(out).write_bytes(b"keep me")
    code, _, err = _run([*argv, "-o", str(out)], capsys)
    assert code == 2 and f"{figure_path(out)} already exists; use --force" in err and "Traceback" not in err
    assert figure_path(out).read_bytes() == b"keep me" and not out.exists()  # nothing was written
    code, summary, err = _run([*argv, "-o", str(out), "--force"], capsys)
    assert code == 0, err
    assert summary["outputs"] == [str(out), str(figure_path(out))]
    assert Image.open(out).size == (SIZE, SIZE) and figure_path(out).read_bytes() != b"keep me"
    assert _files(tmp_path) == ["clean.png", "restored.png", "restored_figure.png"]
    code, _, err = _run([*argv, "-o", str(out)], capsys)  # a second run without --force: refused
    assert code == 2 and f"{out} already exists" in err


def test_reading_converts_alpha_channels_and_16_bit_images(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent: black
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    notes: list[str] = []
    got = read_input(tmp_path / "alpha.png", notes.append)
    assert got.kind == "image" and got.array.shape == (3, 4, 4)
    assert np.allclose(got.array[0, :2], 200 / 255) and np.allclose(got.array[:, 2:], 0.0)
    assert notes == ["composited the image's alpha channel on black"]
    deep = np.full((3, 5), 65535 // 2, dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    got = read_input(tmp_path / "deep.png")
    assert got.array.shape == (1, 3, 5) and np.allclose(got.array, 0.5, atol=1e-4)


def test_channel_conversion_uses_the_luma_weights_and_resizing_keeps_the_range():
    notes: list[str] = []
    rgb = np.zeros((3, 2, 2))
    rgb[0] = 1.0  # pure red
    grey = restore_module._fit_channels(rgb, 1, notes.append)
    assert grey.shape == (1, 2, 2) and np.allclose(grey, 0.299)
    assert restore_module._fit_channels(grey, 3, notes.append).shape == (3, 2, 2)
    with pytest.raises(UserInputError, match="2 channels"):
        restore_module._fit_channels(np.zeros((2, 2, 2)), 1, notes.append)
    sharp = np.zeros((1, 6, 6))
    sharp[:, :, 3:] = 1.0
    resized = restore_module._fit_size(sharp, (16, 12), notes.append)
    assert resized.shape == (1, 16, 12) and resized.min() >= 0.0 and resized.max() <= 1.0  # bicubic overshoot clipped
    assert notes[-1].startswith("resized the image from 6x6 to 12x16")


def test_measurement_rules_without_degrade():
    shape = IMAGE_SHAPE
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    unit = ((rows + cols) / (2 * SIZE - 2))[None]
    image = torch.from_numpy(2.0 * unit - 1.0).float()[None]
    source = InputFile(Path("x.png"), "image", unit)
    notes: list[str] = []
    for task in ("inpainting_center", "sr4"):  # selections and full-size SR images: y = A(image)
        op = make_operator(task, shape)
        y = restore_module._measurement(source, task, op, shape, "cpu", notes.append)
        assert torch.allclose(y, op(image), atol=1e-6)
    assert notes == ["took the 4x4 block average of the full-size image as the 4x4 measurement"]
    y = restore_module._measurement(source, "blur", make_operator("blur", shape), shape, "cpu", notes.append)
    assert torch.allclose(y, image, atol=1e-6)  # image-shaped tasks: the image is y
    op = make_operator("outpainting_half", shape)
    flat = np.arange(SIZE * SIZE // 2, dtype=np.float64) / 1000
    for given in (flat, flat[None]):  # A(x)'s shape with or without the batch axis
        y = restore_module._measurement(InputFile(Path("y.npy"), "array", given), "x", op, shape, "cpu", notes.append)
        assert y.shape == (1, SIZE * SIZE // 2)
