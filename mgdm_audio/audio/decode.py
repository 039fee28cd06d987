"""Decoding and encoding the formats libsndfile does not handle (M4A/AAC, Opus in MP4/WebM, WMA, ...), and MP3
output at a chosen bit rate, through PyAV (FFmpeg's libraries, shipped inside the ``av`` wheel).

* :func:`av_info`: header facts (the frame count is the container's estimate; readers count the decoded frames)
* :func:`av_blocks`: float32 blocks ``(C, n)`` at the file's own rate and channels
* :class:`Mp3Encoder`: an MP3 stream written block by block (libmp3lame, constant bit rate)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mgdm_audio.core.errors import UserInputError

MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
"""Sample rates an MP3 stream can carry (MPEG-1, -2 and -2.5 layer III)."""


def _open(path: Path):  # noqa: ANN202 (av.container.InputContainer; av is imported lazily)
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise UserInputError(
            f"{path} is not a readable audio file ({reason}); give a WAV, FLAC, OGG, MP3 or M4A file."
        ) from err
    if not container.streams.audio:
        container.close()
        raise UserInputError(f"{path} has no audio stream.")
    return container


def av_info(path: Path) -> tuple[int, int, int, str]:
    """``(sample_rate, frames, channels, codec)`` of the first audio stream; ``frames`` is the container's estimate."""
    with _open(path) as container:
        stream = container.streams.audio[0]
        rate, channels = int(stream.codec_context.sample_rate), int(stream.codec_context.channels)
        if rate <= 0 or channels <= 0:  # FFmpeg picks a demuxer by the file name even for text
            raise UserInputError(
                f"{path} is not a readable audio file (no sample rate or channels in its header); "
                "give a WAV, FLAC, OGG, MP3 or M4A file."
            )
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000
        else:
            seconds = 0.0
        return rate, int(round(seconds * rate)), channels, stream.codec_context.name


def av_blocks(path: Path, block_frames: int) -> Iterator[np.ndarray]:
    """Decode the first audio stream into float32 blocks ``(C, block_frames)`` (the last one may be shorter)."""
    import av

    with _open(path) as container:
        stream = container.streams.audio[0]
        channels = int(stream.codec_context.channels)
        pending: list[np.ndarray] = []
        held = 0
        try:
            for frame in container.decode(stream):
                data = frame.to_ndarray()
                if frame.format.is_planar:
                    data = data.reshape(channels, -1)
                else:
                    data = data.reshape(-1, channels).T
                if data.dtype.kind in "iu":
                    data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
                pending.append(np.asarray(data, dtype=np.float32))
                held += data.shape[1]
                while held >= block_frames:
                    joined = np.concatenate(pending, 1)
                    yield joined[:, :block_frames]
                    pending, held = [joined[:, block_frames:]], joined.shape[1] - block_frames
        except av.FFmpegError as err:
            reason = getattr(err, "strerror", None) or str(err)
            raise UserInputError(
                f"Audio file {path} could not be decoded ({reason}); it is probably truncated."
            ) from err
        if held:
            yield np.concatenate(pending, 1)


class Mp3Encoder:
    """Encode float blocks ``(C, n)`` to an MP3 file at ``bitrate`` kbit/s (constant bit rate, libmp3lame)."""

    def __init__(self, path: Path, sample_rate: int, channels: int, bitrate: int) -> None:
        import av

        if sample_rate not in MP3_RATES:
            raise UserInputError(
                f"MP3 cannot store {sample_rate} Hz audio (it stores {', '.join(map(str, MP3_RATES))} Hz); "
                "write WAV or FLAC instead."
            )
        self._av = av
        self.channels = channels
        self.container = av.open(str(path), mode="w", format="mp3")
        self.stream = self.container.add_stream("libmp3lame", rate=sample_rate)
        self.stream.layout = "stereo" if channels == 2 else "mono"
        self.stream.bit_rate = int(bitrate) * 1000
        self.pts = 0

    def write(self, frames: np.ndarray) -> None:
        """Append ``frames`` shaped ``(n, C)`` float32 in [-1, 1]."""
        planar = np.ascontiguousarray(frames.T, dtype=np.float32)
        frame = self._av.AudioFrame.from_ndarray(planar, format="fltp", layout=self.stream.layout.name)
        frame.sample_rate = self.stream.rate
        frame.pts = self.pts
        self.pts += planar.shape[1]
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
