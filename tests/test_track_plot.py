"""The streamed spectrogram behind separation.png equals a direct STFT, whatever the block sizes, in bounded memory."""

import torch

from mgdm_audio.audio.track_plot import SpectrogramSketch


def test_streamed_sketch_equals_the_direct_stft_and_pools_long_signals():
    x = torch.randn(3, 20000, generator=torch.Generator().manual_seed(0))
    whole = SpectrogramSketch(["a", "b", "c"], 8000, x.shape[-1], n_fft=256, columns=10_000)
    whole.push(x)
    whole.finish()
    direct = torch.stft(x, 256, 64, window=torch.hann_window(256), center=False, return_complex=True).abs().pow(2)
    torch.testing.assert_close(whole.db(), 10 * torch.log10(direct + 1e-12), atol=1e-3, rtol=0)
    pooled = SpectrogramSketch(["a", "b", "c"], 8000, x.shape[-1], n_fft=256, columns=50)
    for block in x.split(777, -1):
        pooled.push(block)
    pooled.finish()
    assert pooled.power.shape[-1] <= 50
    k = pooled.per_column
    mean = direct[..., : direct.shape[-1] // k * k].unflatten(-1, (-1, k)).mean(-1)
    torch.testing.assert_close(pooled.db()[..., : mean.shape[-1]], 10 * torch.log10(mean + 1e-12), atol=1e-3, rtol=0)
