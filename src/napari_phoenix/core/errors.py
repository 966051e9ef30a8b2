"""Exceptions that say what was wrong with the user's input and what to do."""

from __future__ import annotations


class PhoenixError(Exception):
    """Base class of every error napari-phoenix raises on purpose."""


class LayerStackError(PhoenixError, ValueError):
    """A layer stack (folder of layer images, TIFF, zarr) cannot be opened as asked."""


class MaskError(PhoenixError, ValueError):
    """A label, ignore or papyrus mask cannot be read or does not fit its stack."""


class CheckpointError(PhoenixError, ValueError):
    """A checkpoint cannot be read, is unsafe to read, or does not fit the network."""
