"""Audio file I/O (soundfile / libsndfile) and a torch resampler.

Every reader returns ``float32`` tensors shaped ``(C, T)`` (channels first, the toolkit's layout) and
turns each way a file can be bad into one :class:`~mgdm_audio.core.errors.UserInputError` sentence:
missing file, a folder, not audio, truncated (declared length longer than the data), zero length,
NaN/inf samples, too many channels.

Writers are atomic: audio goes to a temporary file in the destination folder which is renamed over the
destination (``os.replace``) only when complete, so an interrupted run never leaves a partial file.

* :func:`read_audio`, :func:`audio_info`, :func:`iter_blocks` (bounded-memory block reader)
* :func:`read_segment`: a sample range at another sample rate, equal to resampling the whole file then slicing
* :func:`write_audio`, :class:`StreamingWriter` (block writer with ``commit()`` / ``abort()``)
* :func:`resample` (windowed-sinc polyphase), :func:`to_mono`
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from mgdm_audio.core.atomic import publish, temp_sibling
from mgdm_audio.core.errors import InternalError, UserInputError

__all__ = [
    "AudioInfo",
    "StreamingWriter",
    "audio_info",
    "iter_blocks",
    "read_audio",
    "read_segment",
    "resample",
    "resample_blocks",
    "to_mono",
    "write_audio",
]

#: output formats -> (libsndfile format, allowed subtypes mapped to libsndfile subtypes)
_FORMATS: dict[str, tuple[str, dict[str, str]]] = {
    "wav": ("WAV", {"PCM_16": "PCM_16", "PCM_24": "PCM_24", "FLOAT": "FLOAT"}),
    "flac": ("FLAC", {"PCM_16": "PCM_16", "PCM_24": "PCM_24"}),
    "mp3": ("MP3", {"MP3": "MPEG_LAYER_III"}),
}
_INTEGER_SUBTYPES = {"PCM_16", "PCM_24", "MP3"}
_WAV_DATA_SIZE_RE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says."""

    path: Path
    sample_rate: int
    frames: int
    channels: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        """Length in seconds, ``frames / sample_rate``."""
        return self.frames / self.sample_rate


# --------------------------------------------------------------------------------------------- reading


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"Audio file {path} does not exist; check the path.")
    if path.is_dir():
        raise UserInputError(f"{path} is a folder, not an audio file; give the path of a .wav/.flac/.mp3 file.")
    return path


def _short(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _check_header(path: Path, info: sf._SoundFileInfo, max_channels: int | None) -> None:
    if info.frames <= 0:
        raise UserInputError(f"Audio file {path} has zero length; re-export it with some audio in it.")
    if max_channels is not None and info.channels > max_channels:
        raise UserInputError(
            f"Audio file {path} has {info.channels} channels but at most {max_channels} are supported; "
            "down-mix it to mono or stereo first."
        )
    # libsndfile silently shortens a truncated WAV to the bytes present; its header log says so.
    match = _WAV_DATA_SIZE_RE.search(info.extra_info or "")
    if info.format in {"WAV", "WAVEX"} and match:
        declared, present = int(match.group(1)), int(match.group(2))
        streamed = declared in (0, 0xFFFFFFFF) or declared == 0xFFFFFFFF - 36  # sizes left open by pipe writers
        if declared > present and not streamed:
            raise UserInputError(
                f"Audio file {path} is truncated (its header declares {declared} data bytes, {present} are present); "
                "re-copy or re-export it."
            )


def _check_finite(path: Path, block: np.ndarray) -> None:
    if not np.isfinite(block).all():
        raise UserInputError(f"Audio file {path} contains NaN or infinite samples; re-export it as valid audio.")


def _libsndfile_info(path: Path) -> sf._SoundFileInfo | None:
    """libsndfile's header facts, or None for a format it cannot open (those go through PyAV, :mod:`.decode`)."""
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header facts of an audio file (sample rate, frames, channels, format); raises UserInputError if unreadable.

    Formats libsndfile cannot open (M4A/AAC, ...) are read through PyAV: ``frames`` is then the container's estimate
    and ``subtype`` is ``"LOSSY"``."""
    file = _check_file(path)
    info = _libsndfile_info(file)
    if info is None:
        from mgdm_audio.audio.decode import av_info

        rate, frames, channels, codec = av_info(file)
        return AudioInfo(file, rate, frames, channels, codec.upper(), "LOSSY")
    return AudioInfo(file, int(info.samplerate), int(info.frames), int(info.channels), info.format, info.subtype)


def read_audio(
    path: str | os.PathLike,
    *,
    mono: bool = False,
    max_channels: int | None = None,
    start: int = 0,
    stop: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Read ``path`` as a float32 tensor ``(C, T)`` in [-1, 1] (integer formats) and its sample rate.

    ``mono=True`` averages the channels (:func:`to_mono`), giving ``(1, T)``. ``start``/``stop`` read the frame
    range ``[start, stop)`` only (clipped to the file). ``max_channels`` rejects files with more channels
    (2 for separation). Every bad file gives one :class:`UserInputError`.
    """
    file = _check_file(path)
    info = _libsndfile_info(file)
    if info is None:
        wav = torch.cat(list(_av_blocks(file, 1 << 18, False, max_channels)), -1)[..., int(start) : stop]
        return (to_mono(wav) if mono else wav), audio_info(file).sample_rate
    _check_header(file, info, max_channels)
    first = max(0, min(int(start), info.frames))
    last = info.frames if stop is None else max(first, min(int(stop), info.frames))
    try:
        data = sf.read(str(file), frames=last - first, start=first, dtype="float32", always_2d=True)[0]
    except (sf.LibsndfileError, RuntimeError) as err:
        raise UserInputError(
            f"Audio file {file} could not be decoded ({_short(err)}); it is probably truncated."
        ) from err
    if data.shape[0] != last - first:
        raise UserInputError(
            f"Audio file {file} is truncated (read {data.shape[0]} of {last - first} frames); re-copy or re-export it."
        )
    _check_finite(file, data)
    wav = torch.from_numpy(np.ascontiguousarray(data.T))
    return (to_mono(wav) if mono else wav), int(info.samplerate)


def iter_blocks(
    path: str | os.PathLike,
    block_frames: int,
    *,
    mono: bool = False,
    max_channels: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield consecutive float32 blocks ``(C, block_frames)`` of a file (the last one may be shorter).

    Memory is one block, independent of the file length; the concatenated blocks equal :func:`read_audio`.
    Header problems are raised before the first block; decode errors and NaNs when met.
    """
    if block_frames < 1:
        raise UserInputError(f"block_frames must be at least 1, got {block_frames}.")
    file = _check_file(path)
    info = _libsndfile_info(file)
    if info is None:
        yield from _av_blocks(file, block_frames, mono, max_channels)
        return
    _check_header(file, info, max_channels)
    total = 0
    try:
        with sf.SoundFile(str(file)) as handle:
            while total < info.frames:
                data = handle.read(min(block_frames, info.frames - total), dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                _check_finite(file, data)
                total += data.shape[0]
                wav = torch.from_numpy(np.ascontiguousarray(data.T))
                yield to_mono(wav) if mono else wav
    except (sf.LibsndfileError, RuntimeError) as err:
        raise UserInputError(
            f"Audio file {file} could not be decoded ({_short(err)}); it is probably truncated."
        ) from err
    if total != info.frames:
        raise UserInputError(f"Audio file {file} is truncated (read {total} of {info.frames} frames); re-copy it.")


def _av_blocks(file: Path, block_frames: int, mono: bool, max_channels: int | None) -> Iterator[torch.Tensor]:
    from mgdm_audio.audio.decode import av_blocks, av_info

    rate, _, channels, _ = av_info(file)
    if max_channels is not None and channels > max_channels:
        raise UserInputError(
            f"Audio file {file} has {channels} channels but at most {max_channels} are supported; "
            "down-mix it to mono or stereo first."
        )
    total = 0
    for data in av_blocks(file, block_frames):
        _check_finite(file, data)
        total += data.shape[1]
        wav = torch.from_numpy(np.ascontiguousarray(data))
        yield to_mono(wav) if mono else wav
    if total == 0:
        raise UserInputError(f"Audio file {file} has zero length; re-export it with some audio in it.")


# --------------------------------------------------------------------------------------------- writing


def _resolve_format(path: Path, format: str | None, subtype: str) -> tuple[str, str]:
    name = (format or path.suffix.lstrip(".") or "wav").lower()
    if name not in _FORMATS:
        raise UserInputError(f"Unsupported audio format {name!r} for {path}; use one of {sorted(_FORMATS)}.")
    sf_format, subtypes = _FORMATS[name]
    if name == "mp3":
        subtype = "MP3"
    if subtype not in subtypes:
        raise UserInputError(f"Subtype {subtype!r} is not available for {name}; use one of {sorted(subtypes)}.")
    return sf_format, subtypes[subtype]


def _as_frames(wav: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(C, T)`` or ``(T,)`` -> float32 ``(T, C)`` for soundfile."""
    array = wav.detach().cpu().to(torch.float32).numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    array = array.astype(np.float32, copy=False)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise UserInputError(f"Audio to write must be shaped (channels, samples), got shape {tuple(array.shape)}.")
    if not np.isfinite(array).all():
        raise UserInputError("Audio to write contains NaN or infinite samples; nothing was written.")
    return np.ascontiguousarray(array.T)


def _clip(frames: np.ndarray, integer: bool) -> tuple[np.ndarray, bool]:
    if not integer:
        return frames, False
    clipped = bool(np.abs(frames).max(initial=0.0) > 1.0)
    return (np.clip(frames, -1.0, 1.0) if clipped else frames), clipped


_temp_path = temp_sibling  # .NAME.PID.XXXX.part beside the target (mgdm_audio.core.atomic)
_publish = publish


def write_audio(
    path: str | os.PathLike,
    wav: torch.Tensor | np.ndarray,
    sample_rate: int,
    *,
    format: str | None = None,
    subtype: str = "PCM_16",
) -> bool:
    """Write ``wav`` ``(C, T)`` atomically; returns True if samples were clipped to [-1, 1].

    ``format`` is ``"wav" | "flac" | "mp3"`` (default: the file suffix, else wav); ``subtype`` is
    ``"PCM_16" | "PCM_24" | "FLOAT"`` (FLAC: no FLOAT; MP3 ignores it). Integer and MP3 encodings clip to
    [-1, 1] and warn when they do; FLOAT keeps the values.
    """
    path = Path(path)
    sf_format, sf_subtype = _resolve_format(path, format, subtype)
    frames, clipped = _clip(_as_frames(wav), sf_subtype != "FLOAT")
    if clipped:
        warnings.warn(f"Audio written to {path} exceeded [-1, 1] and was clipped.", stacklevel=2)
    tmp = _temp_path(path)
    try:
        sf.write(str(tmp), frames, int(sample_rate), format=sf_format, subtype=sf_subtype)
        _publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return clipped


class StreamingWriter:
    """Write an audio file block by block; it appears under its name only on :meth:`commit`.

    >>> with StreamingWriter(out, 22050, channels=1) as writer:   # doctest: +SKIP
    ...     for block in blocks:
    ...         writer.write(block)        # (C, T) blocks
    ... # commit() on a clean exit, abort() (temporary file deleted) on an exception

    Integer subtypes and MP3 clamp samples to [-1, 1]: ``clipped_samples`` counts them (``clipped`` is True once any
    was). ``deferred=True`` keeps the blocks in a float32 temporary file and encodes them on :meth:`commit`, which can
    then scale them (``commit(scale)``: the ``rescale`` clip mode, one factor for every stem of a track). MP3 goes
    through PyAV's libmp3lame at ``bitrate`` kbit/s.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sample_rate: int,
        channels: int,
        *,
        format: str | None = None,
        subtype: str = "PCM_16",
        bitrate: int = 320,
        deferred: bool = False,
    ) -> None:
        self.path = Path(path)
        self.format, self.subtype = _resolve_format(self.path, format, subtype)
        self._integer = self.subtype != "FLOAT"
        self.channels = int(channels)
        self.sample_rate = int(sample_rate)
        self.bitrate, self.deferred = int(bitrate), deferred
        self.frames_written = 0
        self.clipped_samples = 0
        self.peak = 0.0
        self._tmp: Path | None = _temp_path(self.path)
        try:
            self._handle: Any = self._open(self._tmp, "WAV" if deferred else self.format, "FLOAT" if deferred else None)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    @property
    def clipped(self) -> bool:
        return self.clipped_samples > 0

    def _open(self, target: Path, sf_format: str, sf_subtype: str | None) -> Any:
        if sf_format == "MP3":
            from mgdm_audio.audio.decode import Mp3Encoder

            return Mp3Encoder(target, self.sample_rate, self.channels, self.bitrate)
        subtype = sf_subtype or self.subtype
        return sf.SoundFile(str(target), "w", self.sample_rate, self.channels, subtype=subtype, format=sf_format)

    def _encode(self, handle: Any, frames: np.ndarray) -> None:
        if self._integer:
            over = np.abs(frames) > 1.0
            if over.any():
                self.clipped_samples += int(over.sum())
                frames = np.clip(frames, -1.0, 1.0)
        handle.write(frames)

    def write(self, block: torch.Tensor | np.ndarray) -> None:
        """Append a ``(C, T)`` block."""
        if self._handle is None:
            raise InternalError(f"StreamingWriter for {self.path} is already closed.")
        frames = _as_frames(block)
        if frames.shape[1] != self.channels:
            raise InternalError(f"Block has {frames.shape[1]} channels, the file {self.path} has {self.channels}.")
        self.peak = max(self.peak, float(np.abs(frames).max(initial=0.0)))
        if self.deferred:
            self._handle.write(frames)
        else:
            self._encode(self._handle, frames)
        self.frames_written += frames.shape[0]

    def commit(self, scale: float = 1.0) -> Path:
        """Close the file (a deferred writer: encode it, times ``scale``) and rename it to its final name."""
        if self._handle is None or self._tmp is None:
            raise InternalError(f"StreamingWriter for {self.path} is already closed.")
        try:
            self._handle.close()
            self._handle = None
            if self.deferred:
                raw, self._tmp = self._tmp, _temp_path(self.path)
                try:
                    self._handle = self._open(self._tmp, self.format, None)
                    with sf.SoundFile(str(raw)) as source:
                        for frames in source.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                            self._encode(self._handle, frames * np.float32(scale))
                    self._handle.close()
                    self._handle = None
                finally:
                    raw.unlink(missing_ok=True)
            _publish(self._tmp, self.path)
            self._tmp = None
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file; the destination is left as it was."""
        if self._handle is not None:
            try:
                self._handle.close()
            finally:
                self._handle = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> StreamingWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None and self._handle is not None:
            self.commit()
        else:
            self.abort()


# --------------------------------------------------------------------------------------------- DSP


def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """Mid signal: the mean of the channels, ``(C, T) -> (1, T)`` (``(..., C, T) -> (..., 1, T)``)."""
    return wav.mean(dim=-2, keepdim=True)


@lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, zero_crossings: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """Polyphase windowed-sinc kernels ``(new, 1, 2 * width + orig)`` in float64, and ``width``.

    Output phase ``j`` (time ``j / new`` in input samples) weights input ``k`` by
    ``h(t) = c * sinc(c * t) * w(t)``, ``t = k / orig - j / new`` (in units of reduced input periods),
    with cutoff ``c = rolloff * min(orig, new) / orig`` (cycles per input sample x orig) and the Hann window
    ``w(t) = cos^2(pi * c t / (2 * zero_crossings))`` on ``|c t| <= zero_crossings``.
    """
    cutoff = rolloff * min(orig, new)  # in units of the reduced rate
    width = math.ceil(zero_crossings * orig / cutoff)  # one-sided support, in input samples
    taps = torch.arange(-width, width + orig, dtype=torch.float64) / orig
    phases = -torch.arange(new, dtype=torch.float64)[:, None] / new
    t = (phases + taps[None, :]) * cutoff  # scaled time: zero crossings at integers
    t = t.clamp(-zero_crossings, zero_crossings)
    window = torch.cos(t * math.pi / (2 * zero_crossings)) ** 2
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(math.pi * t) / (math.pi * t))
    kernels = sinc * window * (cutoff / orig)
    return kernels[:, None, :], width


def resample(
    wav: torch.Tensor,
    sr_in: int,
    sr_out: int,
    *,
    zero_crossings: int = 6,
    rolloff: float = 0.99,
) -> torch.Tensor:
    """Band-limited resampling along the last axis (windowed-sinc polyphase filter, as torchaudio's default).

    With ``g = gcd(sr_in, sr_out)``, ``orig = sr_in / g`` and ``new = sr_out / g``, output sample ``n`` is the
    input interpolated at time ``n * orig / new`` by a Hann-windowed sinc low-pass at ``rolloff * min(sr_in,
    sr_out) / 2`` Hz with ``zero_crossings`` zero crossings each side. The input is zero outside its range.
    Output length is ``ceil(T * sr_out / sr_in)``. Any leading shape is kept; computed in the input dtype.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise UserInputError(f"Sample rates must be positive, got {sr_in} -> {sr_out}.")
    if sr_in == sr_out:
        return wav
    g = math.gcd(int(sr_in), int(sr_out))
    orig, new = int(sr_in) // g, int(sr_out) // g
    kernel, width = _sinc_kernel(orig, new, zero_crossings, rolloff)
    dtype = wav.dtype if wav.dtype in (torch.float32, torch.float64) else torch.float32
    kernel = kernel.to(device=wav.device, dtype=dtype)
    lead, length = wav.shape[:-1], wav.shape[-1]
    flat = wav.reshape(-1, 1, length).to(dtype)
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    out = torch.nn.functional.conv1d(padded, kernel, stride=orig)  # (N, new, blocks)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target = math.ceil(new * length / orig)
    return out[:, :target].reshape(*lead, target)


def resample_blocks(blocks: Iterable[torch.Tensor], sr_in: int, sr_out: int) -> Iterator[torch.Tensor]:
    """Resample a stream of ``(C, n)`` blocks with python-soxr's streaming resampler (very high quality: linear
    phase, 0.913 of the lower Nyquist passband, about 170 dB stop band). The concatenated output equals
    ``soxr.resample`` of the whole signal (``round(T * sr_out / sr_in)`` samples) whatever the block sizes."""
    if sr_in == sr_out:
        yield from blocks
        return
    import soxr

    stream: soxr.ResampleStream | None = None
    channels = 1
    for block in blocks:
        if stream is None:
            channels = block.shape[0]
            stream = soxr.ResampleStream(sr_in, sr_out, channels, dtype="float32", quality="VHQ")
        out = stream.resample_chunk(np.ascontiguousarray(block.float().numpy().T))
        if out.shape[0]:
            yield torch.from_numpy(np.ascontiguousarray(out.T))
    if stream is not None:
        out = stream.resample_chunk(np.zeros((0, channels), dtype=np.float32), last=True)
        if out.shape[0]:
            yield torch.from_numpy(np.ascontiguousarray(out.T))


def read_segment(
    path: str | os.PathLike,
    start: int,
    stop: int,
    *,
    sample_rate: int | None = None,
    mono: bool = False,
    max_channels: int | None = None,
) -> torch.Tensor:
    """Samples ``[start, stop)`` of ``path`` resampled to ``sample_rate``, as float32 ``(C, stop - start)``.

    Equals ``resample(read_audio(path), sr_file, sample_rate)[..., start:stop]`` (up to float rounding) but reads
    only the needed input: with ``orig / new`` the reduced rate ratio, output block ``b`` (samples
    ``b*new .. b*new+new-1``) depends on input ``b*orig - width .. b*orig + orig + width``, so the read starts on
    a block boundary ``a = b0*orig`` minus a whole number of blocks covering the filter half-width. Samples past
    the end of the file are zeros.
    """
    info = audio_info(path)
    sr_out = info.sample_rate if sample_rate is None else int(sample_rate)
    start, stop = int(start), int(stop)
    if stop < start:
        raise UserInputError(f"Segment stop {stop} is before start {start} for {path}.")
    if sr_out == info.sample_rate:
        wav, _ = read_audio(path, mono=mono, max_channels=max_channels, start=start, stop=stop)
    else:
        g = math.gcd(info.sample_rate, sr_out)
        orig, new = info.sample_rate // g, sr_out // g
        _, width = _sinc_kernel(orig, new, 6, 0.99)
        margin = (math.ceil(width / orig) + 1) * orig
        first_block, last_block = start // new, -(-stop // new)
        a = max(0, first_block * orig - margin)
        c = min(info.frames, last_block * orig + margin)
        if a >= c:
            wav = torch.zeros(1 if mono else info.channels, 0)
        else:
            raw, _ = read_audio(path, mono=mono, max_channels=max_channels, start=a, stop=c)
            out = resample(raw, info.sample_rate, sr_out)
            offset = (a // orig) * new
            wav = out[..., max(0, start - offset) : max(0, stop - offset)]
        # the last output samples of the whole file depend on the zero padding after it: compute them the same way
        total_out = math.ceil(info.frames * new / orig)
        wav = wav[..., : max(0, min(stop, total_out) - start)]
    missing = (stop - start) - wav.shape[-1]
    if missing > 0:
        wav = torch.nn.functional.pad(wav, (0, missing))
    return wav.contiguous()
