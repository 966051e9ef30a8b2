"""Thin napari glue: reader, writer, sample data and widgets.

Everything here turns core results into napari layer data and back; the work
itself lives in :mod:`napari_phoenix.core`.
"""
