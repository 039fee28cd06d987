"""mgdm_audio: posterior sampling with diffusion priors (MGDM and competitors) for music source
separation and image restoration."""

__version__ = "0.1.0"
