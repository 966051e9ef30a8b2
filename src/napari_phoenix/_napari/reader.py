"""npe2 reader: segment folders, layers/ folders, multi-page TIFFs and zarr stores.

On disk or at ``http(s)://`` addresses (read lazily by byte ranges through the
remote cache, see ``docs/reading.md#remote-data``).
"""

from __future__ import annotations

from pathlib import Path

from ..core.remote_http import RemotePath, is_url
from ..core.stack import LAYER_NAME

#: what an address may end in to be tried as a stack (folders have no suffix)
URL_SUFFIXES = ("", ".tif", ".tiff", ".zarr")


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
    if is_url(str(path)):
        url = str(path)
        ours = url.endswith("/") or RemotePath(url).suffix.lower() in URL_SUFFIXES
        return read_stack if ours else None
    path = Path(path)
    if not path.exists() or not _ours(path):
        return None
    return read_stack


def read_stack(path):
    """Open ``path`` lazily as layer data tuples (stack, then mask / label / ignore)."""
    from .layer_data import path_layer_data

    if isinstance(path, list | tuple):
        path = path[0]
    if is_url(str(path)):
        from ..core.remote import is_remote_segment, open_remote_segment, open_remote_stack
        from .layer_data import segment_layer_data, stack_layer_data

        url = str(path)
        if is_remote_segment(url):
            return segment_layer_data(open_remote_segment(url))
        return [stack_layer_data(open_remote_stack(url))]
    return path_layer_data(path)
