"""npe2 reader: segment folders, layers/ folders, multi-page TIFFs and zarr stores."""

from __future__ import annotations

from pathlib import Path

from ..core.stack import LAYER_NAME


def _ours(path: Path) -> bool:
    if path.is_dir():
        if any((path / f).exists() for f in (".zarray", ".zgroup", "zarr.json")):
            return True
        if (path / "layers").is_dir():
            return True
        return any(LAYER_NAME.match(p.name) for p in path.iterdir())
    return path.suffix.lower() in (".tif", ".tiff")


def get_reader(path):
    """Return a reader function if ``path`` is a layer stack napari-phoenix opens, else None.

    Parameters
    ----------
    path : str or list of str
        What the user dropped or opened; a list of one path is accepted.

    Returns
    -------
    callable or None
        A function returning napari layer data tuples.
    """
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(path)
    if not path.exists() or not _ours(path):
        return None
    return read_stack


def read_stack(path):
    """Open ``path`` lazily as layer data tuples (stack, then mask / label / ignore)."""
    from .layer_data import path_layer_data

    if isinstance(path, list | tuple):
        path = path[0]
    return path_layer_data(path)
