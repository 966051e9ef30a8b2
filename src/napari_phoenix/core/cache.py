"""Where napari-phoenix keeps files it can make again (sample segments)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$NAPARI_PHOENIX_CACHE``, else ``$XDG_CACHE_HOME/napari-phoenix``, else ``~/.cache/napari-phoenix``."""
    env = os.environ.get("NAPARI_PHOENIX_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-phoenix"
