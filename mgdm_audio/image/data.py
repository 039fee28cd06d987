"""Fashion-MNIST for the image priors: Debian's ``dataset-fashion-mnist`` files, padded to 32x32, in ``[-1, 1]``.

Files (``apt-get install dataset-fashion-mnist``, MIT licence, Zalando Research):
``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``; 60,000 train and 10,000
test images of 28x28 uint8. Splits used by the package (so nothing is tuned on the images it is scored on):

* ``train``: train images ``0 .. 54,999`` (prior training);
* ``validation``: train images ``55,000 .. 59,999`` (validation loss, sampler settings);
* ``test``: the 10,000 ``t10k`` images (the image benchmark's held-out images).

Images are zero-padded by 2 pixels (black background, as the data) to ``(1, 32, 32)`` and mapped
``u8 -> u8 / 127.5 - 1``. :class:`FashionMNISTLatents` encodes a split once with a trained autoencoder.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mgdm_audio.core.errors import UserInputError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
SPLITS: dict[str, tuple[str, int, int | None]] = {
    "train": ("train", 0, 55_000),
    "validation": ("train", 55_000, None),
    "test": ("t10k", 0, None),
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes: magic ``0x0000 08 nd``, ``nd`` big-endian sizes, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip: truncated -> EOFError, corrupt -> zlib.error
        raise UserInputError(f"cannot read {path} ({err}); is it an IDX file?") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise UserInputError(f"{path} is not an unsigned-byte IDX file.")
    nd = data[3]
    if len(data) < 4 + 4 * nd:
        raise UserInputError(f"{path} is truncated: its IDX header names {nd} dimensions but is shorter.")
    dims = struct.unpack(f">{nd}I", data[4 : 4 + 4 * nd])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd)
    if body.size != int(np.prod(dims)):
        raise UserInputError(f"{path} is truncated: expected {int(np.prod(dims))} bytes of data, found {body.size}.")
    return body.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise UserInputError(
        f"Fashion-MNIST file {stem}[.gz] not found in {root}; install it with "
        "'apt-get install dataset-fashion-mnist' or pass --data-root to a folder with the IDX files."
    )


def load_fashion_mnist(
    split: str = "train", root: str | Path = DEFAULT_ROOT, pad_to: int = 32, limit: int | None = None
) -> tuple[Tensor, Tensor]:
    """``(images (N, 1, pad_to, pad_to) float32 in [-1, 1], labels (N,) int64)`` of a package split."""
    if split not in SPLITS:
        raise UserInputError(f"unknown Fashion-MNIST split {split!r}; choose one of: {', '.join(SPLITS)}.")
    prefix, start, stop = SPLITS[split]
    root = Path(root)
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))[start:stop]
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))[start:stop]
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    h, w = images.shape[1:]
    if pad_to < max(h, w):
        raise UserInputError(f"pad_to={pad_to} is smaller than the {h}x{w} images.")
    top, left = (pad_to - h) // 2, (pad_to - w) // 2
    out = np.zeros((images.shape[0], 1, pad_to, pad_to), dtype=np.float32)
    out[:, 0, top : top + h, left : left + w] = images
    return torch.from_numpy(out / 127.5 - 1.0), torch.from_numpy(labels.astype(np.int64))


class FashionMNIST(Dataset):
    """Items ``(1, 32, 32)`` float32 in ``[-1, 1]`` of a split (``train``, ``validation``, ``test``)."""

    def __init__(
        self, split: str = "train", root: str | Path = DEFAULT_ROOT, pad_to: int = 32, limit: int | None = None
    ) -> None:
        self.images, self.labels = load_fashion_mnist(split, root, pad_to, limit)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


class FashionMNISTLatents(Dataset):
    """The latents ``Enc(x)`` of a Fashion-MNIST split under a trained autoencoder (encoded once, in memory).

    ``autoencoder`` is a shipped image-model name or an export folder (see :mod:`mgdm_audio.image.priors`).
    """

    def __init__(
        self,
        autoencoder: str | Path,
        split: str = "train",
        root: str | Path = DEFAULT_ROOT,
        pad_to: int = 32,
        limit: int | None = None,
        batch_size: int = 500,
    ) -> None:
        from mgdm_audio.image.priors import load_autoencoder

        ae = load_autoencoder(autoencoder)
        images, self.labels = load_fashion_mnist(split, root, pad_to, limit)
        with torch.no_grad():
            self.latents = torch.cat([ae.encode(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.latents[i]
