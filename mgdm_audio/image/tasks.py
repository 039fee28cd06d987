"""The names of the image tasks and the rules for ``restore``'s input: light (no torch), so that the command line's
help is built without loading the models."""

from __future__ import annotations

#: the MGDM reference code's image tasks (operators in :mod:`mgdm_audio.image.operators`)
TASKS = (
    "outpainting_half",
    "inpainting_center",
    "sr4",
    "sr16",
    "blur",
    "motion_blur",
    "phase_retrieval",
    "high_dynamic_range",
    "jpeg2",
    "nonlinear_blur",
)

KERNEL_WIZARD_HELP = (
    "bkse KernelWizard weights (GOPRO_wVAE.pth or .safetensors) for nonlinear_blur: the reference's blur network "
    "instead of the shipped stand-in (not downloadable here; bring your own)"
)

INPUT_RULES = """\
input rules:
  --degrade          IMAGE is a clean image; the measurement y = A(x) + sigma_y z is made from it
                     (a .npy then holds the clean image in [-1, 1], shape (C, H, W) or (H, W))
  without --degrade  IMAGE is the measurement:
    .npy                                   an array of A(x)'s shape, for any task
    blur, motion_blur, high_dynamic_range,
    jpeg2, nonlinear_blur                  the image itself is y
    outpainting_half, inpainting_center    y = the observed pixels of the image
    sr4, sr16                              a low-res (H/f x W/f) image is y; a full-size image is
                                           block-averaged
    phase_retrieval                        not an image: use --degrade or a .npy measurement
  RGB/grey is converted and a wrong size is resized (bicubic) to the prior's shape, with a note;
  an alpha channel is composited on black."""
