"""Open things in a napari viewer (used by ``phoenix demo`` and scripted sessions)."""

from __future__ import annotations

from pathlib import Path


def show_segment(path: str | Path, viewer=None):
    """Open a segment (or any stack) in ``viewer`` with the Phoenix reader.

    Parameters
    ----------
    path : str or Path
        Segment folder, layers folder, TIFF or zarr.
    viewer : napari.Viewer, optional
        The viewer to use; a new one is made if None.

    Returns
    -------
    napari.Viewer
        The viewer, showing the middle layer of the stack.
    """
    import napari

    viewer = viewer or napari.Viewer(title="napari-phoenix")
    layers = viewer.open(str(path), plugin="napari-phoenix")
    stack = layers[0]
    numbers = stack.metadata["phoenix"]["layer_numbers"]
    viewer.dims.set_point(0, numbers[len(numbers) // 2])
    viewer.reset_view()
    return viewer
