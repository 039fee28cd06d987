"""Package attributes imported on first use (PEP 562): a package's ``__init__`` can list what it offers without
importing torch, so that light modules (the command line's parser, :mod:`mgdm_audio.core.errors`) load fast and
the thread settings are made before torch loads (:mod:`mgdm_audio.core.threads`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``package.where[name]`` when ``name`` is first used."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return __getattr__
