"""A scroll segment folder: the layer stack plus its papyrus mask, ink label and ignore mask.

The prize layout::

    SEGMENT/
      layers/00.tif … 20.tif
      mask.png      papyrus area (255)
      label.png     ink (255)
      ignore.png    pixels left out of the loss (255)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LayerStackError, MaskError
from .masks import read_mask, read_mask_shape
from .stack import LayerStack, open_stack

#: role -> file name in the prize layout
MASK_FILES = {"mask": "mask.png", "label": "label.png", "ignore": "ignore.png"}


@dataclass(frozen=True)
class Segment:
    """A segment folder opened lazily.

    Attributes
    ----------
    root : Path
        The segment folder.
    stack : LayerStack
        The layers, read lazily.
    files : dict
        ``{"mask" | "label" | "ignore": Path}`` for the mask files present.
    """

    root: Path
    stack: LayerStack
    files: dict[str, Path]

    @property
    def name(self) -> str:
        return self.root.name

    def path_of(self, role: str) -> Path:
        """Where the ``role`` mask (``mask``, ``label``, ``ignore``) lives or would live."""
        if role not in MASK_FILES:
            raise MaskError(f"unknown mask role {role!r}; use one of {', '.join(MASK_FILES)}")
        return self.root / MASK_FILES[role]

    def read(self, role: str) -> np.ndarray | None:
        """The ``role`` mask as a bool array ``(Y, X)``, or None if the file is absent.

        Raises
        ------
        MaskError
            If the file cannot be read or its size differs from the layers.
        """
        path = self.files.get(role)
        if path is None:
            return None
        check_mask_shape(path, self.stack.shape[1:])
        return read_mask(path)


def check_mask_shape(path: Path, shape: tuple[int, int]) -> None:
    """Raise :class:`MaskError` if the image at ``path`` is not ``shape`` (rows, columns)."""
    got = tuple(read_mask_shape(path))
    if got != tuple(shape):
        raise MaskError(
            f"{path.name} is {got[1]:,} x {got[0]:,} px (width x height) but the layers are "
            f"{shape[1]:,} x {shape[0]:,}; it belongs to another segment or chunk"
        )


def is_segment(path: str | Path) -> bool:
    """True if ``path`` is a folder holding ``layers/``."""
    path = Path(path)
    return path.is_dir() and (path / "layers").is_dir()


def open_segment(path: str | Path, **stack_options) -> Segment:
    """Open a segment folder: the lazy stack and the mask files beside ``layers/``.

    Parameters
    ----------
    path : str or Path
        The segment folder (the one holding ``layers/``), or its ``layers/`` folder;
        also an ``http(s)://`` address (mask files are then fetched whole into
        the cache, and ``files`` are the cached copies).
    **stack_options
        Passed to :func:`~napari_phoenix.open_stack` (e.g. ``chunks``).

    Returns
    -------
    Segment
        Mask files are found but not read; their sizes are checked against the stack.

    Raises
    ------
    LayerStackError
        If there is no ``layers/`` folder or the layers cannot be opened.
    MaskError
        If a mask file's size differs from the layers'.
    """
    from .remote_http import is_url

    if is_url(str(path)):
        from .remote import open_remote_segment

        return open_remote_segment(str(path), **stack_options)
    path = Path(path).expanduser()
    if path.name == "layers" and path.is_dir() and not (path / "layers").is_dir():
        path = path.parent
    if not is_segment(path):
        raise LayerStackError(f"{path}: not a segment folder (no layers/ folder inside)")
    stack = open_stack(path / "layers", **stack_options)
    files = {}
    for role, name in MASK_FILES.items():
        candidate = path / name
        if candidate.is_file():
            check_mask_shape(candidate, stack.shape[1:])
            files[role] = candidate
    return Segment(root=path, stack=stack, files=files)
