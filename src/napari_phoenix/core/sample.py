"""The bundled sample segment: a phantom written once into the cache and reused."""

from __future__ import annotations

import json
from pathlib import Path

from .cache import cache_dir
from .phantom import PhantomParams, make_phantom


def sample_segment(dtype: str = "uint8", folder: str | Path | None = None, **overrides) -> Path:
    """Path of a phantom segment folder, generating it only if missing or different.

    Parameters
    ----------
    dtype : str
        ``"uint8"`` or ``"uint16"`` layers.
    folder : str or Path, optional
        Where to put it; defaults to ``<cache>/sample-<dtype>``.
    **overrides
        Other :class:`~napari_phoenix.core.phantom.PhantomParams` fields.

    Returns
    -------
    Path
        The segment folder (``layers/``, ``mask.png``, ``label.png``, ``ignore.png``).
    """
    params = PhantomParams(dtype=dtype, **overrides)
    dest = Path(folder) if folder else cache_dir() / f"sample-{dtype}"
    record = dest / "phantom.json"
    if record.is_file():
        try:
            if json.loads(record.read_text()).get("params") == _params_dict(params):
                return dest
        except (OSError, ValueError):
            pass
    return make_phantom(dest, params)


def _params_dict(params: PhantomParams) -> dict:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(params)))
