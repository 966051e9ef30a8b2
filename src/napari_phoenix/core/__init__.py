"""Pure core of napari-phoenix: numpy / dask / zarr / tifffile / torch only.

Nothing under this package may import napari, magicgui or Qt (checked by the
import-linter contract in ``pyproject.toml`` and by ``tests/test_architecture.py``).
"""
