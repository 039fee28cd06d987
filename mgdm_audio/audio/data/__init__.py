"""Multi-stem music data: the Slakh-style renderer (procedural songs, Bach chorales, soundfont backends)."""

from mgdm_audio.audio.data.procedural import STEM_NAMES, Song, StemScore, generate_song
from mgdm_audio.audio.data.readers import MusdbDataset, SlakhDataset
from mgdm_audio.audio.data.render import Recipe, SplitSpec, load_recipe, render_split

__all__ = [
    "MusdbDataset",
    "SlakhDataset",
    "STEM_NAMES",
    "Recipe",
    "Song",
    "SplitSpec",
    "StemScore",
    "generate_song",
    "load_recipe",
    "render_split",
]
