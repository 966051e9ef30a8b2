"""Layers in and out of the "Predict ink" widget: stack layer -> job input, job results -> layers.

The job's inputs: a stack Image layer as a stack (:class:`LayerInput`), the
windows typed (:func:`parse_windows`), the devices (:func:`device_choices`),
the part on screen (:func:`visible_bounds`) and the default store
(:func:`default_store`).

A prediction is shown as two Image layers over its stack layer:

* ``<stack> prediction windows``: every window's map, stacked. Layers of the
  same rank share napari's sliders by position, so the window axis *is* the
  stack's layer axis: window ``s`` (which reads layers ``s … s+15``) sits at
  layer ``s`` on the slider, and the stack's "layer" axis label is kept.
* ``<stack> prediction``: :func:`~napari_phoenix.core.overlay.composite` of
  those maps (mean or max, boost, flip, invert: :class:`OverlayControls`),
  lazy, so changing the overlay settings only replaces a dask graph.

Data are dask arrays over the maps (the zarr store's arrays, or in-memory
arrays for a quick look); each update builds new dask names, so napari never
shows a cached, stale tile.
"""

from __future__ import annotations

import copy
import math
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout

from ..core.overlay import OverlaySettings, composite
from ..core.predict import PredictError

ROLES = ("prediction windows", "prediction composite")
INCOMPLETE = " (incomplete)"


class LayerInput:
    """A stack Image layer as :func:`~napari_phoenix.core.predict.iter_predict` input.

    Parameters
    ----------
    layer : napari.layers.Image
        The stack layer (level 0 of a multiscale one).
    """

    def __init__(self, layer: Any):
        self.data = layer.data[0] if layer.multiscale else layer.data
        meta = dict(layer.metadata.get("phoenix", {}))
        numbers = meta.get("layer_numbers")
        if numbers is None or len(numbers) != self.data.shape[0]:
            first = int(np.rint(layer.translate[0])) if layer.ndim == 3 else 0
            numbers = list(range(first, first + int(self.data.shape[0])))
        self.layer_numbers = [int(n) for n in numbers]
        self.source = meta.get("source") or meta.get("segment")
        self._meta = meta

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def metadata(self) -> dict:
        """The layer's Phoenix metadata (what the stack provenance reads)."""
        return self._meta


def parse_windows(text: str) -> tuple[int, ...]:
    """``"3, 4,5"`` -> ``(3, 4, 5)`` (sorted, unique).

    Parameters
    ----------
    text : str
        First layer numbers separated by commas or spaces.

    Returns
    -------
    tuple of int
    """
    parts = [p for p in re.split(r"[,;\s]+", text.strip()) if p]
    try:
        windows = tuple(sorted({int(p) for p in parts}))
    except ValueError:
        raise PredictError(f"windows are first-layer numbers separated by commas, e.g. 3,4,5; got {text!r}") from None
    if not windows:
        raise PredictError("give at least one window: its first layer number, e.g. 3,4,5")
    return windows


def device_choices() -> list[tuple[str, str]]:
    """``(label, device)`` pairs: auto, the CPU and every CUDA device by name."""
    import torch

    cuda = [(f"cuda:{i} — {torch.cuda.get_device_name(i)}", f"cuda:{i}")
            for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]  # fmt: skip
    auto = f"auto ({cuda[0][1] if cuda else 'cpu'})"
    return [(auto, "auto"), ("cpu", "cpu"), *cuda]


def visible_bounds(viewer: Any, layer: Any) -> tuple[int, int, int, int]:
    """The pixels of ``layer`` on screen, ``(y0, y1, x0, x1)`` in data coordinates.

    Parameters
    ----------
    viewer : napari.Viewer
        Its camera centre, zoom and canvas size give the visible world box.
    layer : napari.layers.Image
        The stack layer; its last two dims' scale and translate convert world
        to data coordinates.

    Returns
    -------
    tuple of int
        Half-open bounds, clipped to the layer.

    Raises
    ------
    PredictError
        In the 3D view, with other axes than y and x on screen, or when the
        layer is off screen.
    """
    dims = viewer.dims
    if dims.ndisplay != 2 or tuple(dims.displayed) != (dims.ndim - 2, dims.ndim - 1):
        raise PredictError("predicting the visible region needs the 2D view with y and x on screen")
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    canvas = viewer.canvas.size if hasattr(getattr(viewer, "canvas", None), "size") else viewer._canvas_size
    half = np.asarray(canvas, float) / 2 / camera.zoom
    centre = np.asarray(camera.center[-2:], float)
    t, s = np.asarray(layer.translate[-2:], float), np.asarray(layer.scale[-2:], float)
    a, b = (centre - half - t) / s, (centre + half - t) / s
    lo = np.floor(np.minimum(a, b) + 0.5).astype(int)  # pixel i spans [i - 0.5, i + 0.5)
    hi = np.ceil(np.maximum(a, b) + 0.5).astype(int)
    shape = np.asarray((layer.data[0] if layer.multiscale else layer.data).shape[-2:])
    lo, hi = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
    if (hi <= lo).any():
        raise PredictError(f"{layer.name} is not on screen; pan to the part to predict")
    return int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1])


def default_store(layer, checkpoint: str) -> str:
    """``<segment>/predictions/<checkpoint stem>.zarr``; beside the stack's source, else in a temp dir.

    Parameters
    ----------
    layer : napari.layers.Image
        The stack layer.
    checkpoint : str
        The checkpoint path (its stem names the store).

    Returns
    -------
    str
    """
    stem = Path(checkpoint).stem or "prediction"
    meta = layer.metadata.get("phoenix", {})
    if meta.get("segment"):
        return str(Path(meta["segment"]) / "predictions" / f"{stem}.zarr")
    if meta.get("source"):
        return str(Path(meta["source"]).parent / "predictions" / f"{stem}.zarr")
    safe = re.sub(r"[^\w.-]+", "_", layer.name)
    return str(Path(tempfile.gettempdir()) / "napari-phoenix" / f"{safe}-{stem}.zarr")


def _lazy(array: Any) -> Any:
    """A dask array over ``array`` with a fresh name (no stale napari cache)."""
    import dask.array as da

    chunks = getattr(array, "chunks", None)
    if not (isinstance(chunks, tuple) and len(chunks) == 2 and all(isinstance(c, int) for c in chunks)):
        chunks = tuple(min(1024, int(n)) for n in array.shape)
    return da.from_array(array, chunks=chunks, name=False)


class PredictionLayers:
    """The windows layer and the composite layer of one prediction of one stack layer.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the layers are added (or found again from an earlier run).
    source : napari.layers.Image
        The stack layer predicted.
    windows : sequence of int
        First layer number of each window (sorted).
    layer_numbers : sequence of int
        Layer number of each stack index (places the windows on the slider).
    visible_only : bool
        A quick look at the visible region: layers named "… (visible)".
    overlay : OverlaySettings
        How the composite layer is made.
    tag : str, optional
        Another kind of result of the same stack (e.g. ``"fine-tuned"``): layers
        named "… (tag)", kept apart from the untagged ones (neither reuses the other's).
    """

    def __init__(self, viewer: Any, source: Any, windows: Sequence[int], layer_numbers: Sequence[int],
                 visible_only: bool, overlay: OverlaySettings, tag: str | None = None):  # fmt: skip
        self.viewer, self.source, self.windows = viewer, source, tuple(windows)
        self.visible_only, self.overlay, self.tag = visible_only, overlay, tag
        self.arrays: list[Any] = []
        self.complete = False
        suffix = f" ({tag})" if tag else " (visible)" if visible_only else ""
        self.names = (f"{source.name} prediction windows{suffix}", f"{source.name} prediction{suffix}")
        numbers = list(layer_numbers)
        missing = [w for w in self.windows if w not in numbers]
        if missing:
            raise PredictError(f"window {missing[0]} starts at layer {missing[0]}, which {source.name} lacks "
                               f"(layers {numbers[0]}–{numbers[-1]})")  # fmt: skip
        index = [numbers.index(w) for w in self.windows]
        steps = np.diff(index)
        self.step = int(np.gcd.reduce(steps)) if len(steps) else 1
        self.slots = [(i - index[0]) // self.step for i in index]  # slider position of each window
        z0, dz = float(source.translate[0]), float(source.scale[0])
        self.translate = (z0 + dz * index[0], *(float(v) for v in source.translate[-2:]))
        self.scale = (dz * self.step, *(float(v) for v in source.scale[-2:]))
        width = source.data[0].shape[-1] if source.multiscale else source.data.shape[-1]
        # a multiscale stack gets multiscale maps with the same strides (napari reads what is on screen)
        self.factors = [round(width / level.shape[-1]) for level in source.data] if source.multiscale else [1]
        self.layers = self._find()

    # ---- layers ---------------------------------------------------------------------------

    def _meta(self, role: str) -> dict:
        meta = {"role": role, "source_layer": self.source.name, "visible_only": self.visible_only,
                "windows": list(self.windows), "complete": False}  # fmt: skip
        return {**meta, "tag": self.tag} if self.tag else meta

    def _find(self) -> list:
        """The layers of an earlier run of the same stack and kind (reused), else []."""
        found = {}
        for ly in self.viewer.layers:
            m = ly.metadata.get("phoenix", {})
            if (m.get("role") in ROLES and m.get("source_layer") == self.source.name
                    and m.get("visible_only") == self.visible_only and m.get("tag") == self.tag):  # fmt: skip
                found[m["role"]] = ly
        return [found[r] for r in ROLES] if len(found) == 2 else []

    def alive(self) -> bool:
        """Both layers are still in the viewer."""
        return bool(self.layers) and all(ly in self.viewer.layers for ly in self.layers)

    def start(self, store: str | None, settings: dict) -> None:
        """Show the maps, still filling, as the two layers (called once the job has begun).

        Parameters
        ----------
        store : str or None
            The job's zarr store (its arrays are shown as they are written);
            None: in-memory maps that :meth:`paste` fills.
        settings : dict
            The prediction settings (for the metadata until the final provenance).
        """
        if store:
            import zarr

            group = zarr.open_group(store, mode="r")
            self.arrays = [group[f"window_{w:02d}"] for w in self.windows]
        else:  # pages never written stay unallocated
            shape = (self.source.data[0] if self.source.multiscale else self.source.data).shape[-2:]
            self.arrays = [np.zeros(shape, np.float32) for _ in self.windows]
        self.complete = False
        windows, comp = self._data()
        metas = [{**self._meta(r), "store": store, "settings": settings} for r in ROLES]
        metas[1]["overlay"] = self.overlay.to_dict()
        if self.alive():
            places = ((self.translate, self.scale), (self.translate[1:], self.scale[1:]))
            for ly, data, name, meta, (t, s) in zip(self.layers, (windows, comp), self.names, metas, places,
                                                    strict=True):  # fmt: skip
                ly.data, ly.translate, ly.scale = data, t, s
                ly.name, ly.metadata["phoenix"] = name, meta
            return
        labels = tuple(self.source.axis_labels)
        common = {"contrast_limits": (0.0, 1.0), "blending": "translucent", "multiscale": len(self.factors) > 1}
        self.layers = [
            self.viewer.add_image(windows, name=self.names[0], colormap="magma", metadata={"phoenix": metas[0]},
                                  translate=self.translate, scale=self.scale, axis_labels=labels,
                                  visible=False, **common),
            self.viewer.add_image(comp, name=self.names[1], colormap="gray", metadata={"phoenix": metas[1]},
                                  translate=self.translate[1:], scale=self.scale[1:], axis_labels=labels[-2:],
                                  **common),
        ]  # fmt: skip
        self._show_first_window()

    def _show_first_window(self) -> None:
        """Move the layer slider onto the windows if it is elsewhere (the windows layer is empty there)."""
        dims = self.viewer.dims
        axis = dims.ndim - 3
        if axis < 0 or axis in dims.displayed:
            return
        z0, z1 = self.translate[0], self.translate[0] + self.scale[0] * self.slots[-1]
        if not z0 - 0.5 * self.scale[0] <= dims.point[axis] <= z1 + 0.5 * self.scale[0]:
            dims.set_point(axis, z0)

    def _data(self) -> tuple[Any, Any]:
        import dask.array as da

        maps = [_lazy(a) for a in self.arrays]
        slots = [da.zeros_like(maps[0])] * (self.slots[-1] + 1)
        for k, m in zip(self.slots, maps, strict=True):
            slots[k] = m
        return self._levels(da.stack(slots)), self._levels(composite(maps, self.overlay))

    def _levels(self, data: Any) -> Any:
        return [data[..., ::f, ::f] for f in self.factors] if len(self.factors) > 1 else data

    def paste(self, region: Sequence[int], maps: dict[str, np.ndarray]) -> None:
        """Copy one region's maps into in-memory arrays (zarr arrays are already written).

        Parameters
        ----------
        region : (y0, y1, x0, x1)
            Where the maps go.
        maps : dict
            ``{"window_03": array, ...}`` as the job's region events carry them.
        """
        y0, y1, x0, x1 = region
        for w, arr in zip(self.windows, self.arrays, strict=True):
            if isinstance(arr, np.ndarray) and maps is not None:
                arr[y0:y1, x0:x1] = maps[f"window_{w:02d}"]

    def refresh(self) -> None:
        """Show the maps as they are now (regions done so far)."""
        if not self.alive():
            return
        windows, comp = self._data()
        self.layers[0].data, self.layers[1].data = windows, comp

    def set_overlay(self, overlay: OverlaySettings) -> None:
        """Make the composite layer with other overlay settings (lazily).

        Parameters
        ----------
        overlay : OverlaySettings
            Mean or max, boost, flip, invert.
        """
        self.overlay = overlay
        if not self.alive() or not self.arrays:
            return
        comp = self.layers[1]
        comp.data = self._levels(composite([_lazy(a) for a in self.arrays], overlay))
        comp.metadata["phoenix"] = {**comp.metadata["phoenix"], "overlay": overlay.to_dict()}

    def finish(self, prediction: Any) -> None:
        """Show the finished maps (zarr-backed when stored) with their provenance.

        Parameters
        ----------
        prediction : napari_phoenix.core.predict.Prediction
            The job's result.
        """
        self.arrays = [prediction.windows[w] for w in self.windows]
        self.complete = True
        if not self.alive():
            return
        self.refresh()
        for ly, role, name in zip(self.layers, ROLES, self.names, strict=True):
            meta = {**copy.deepcopy(prediction.provenance), **self._meta(role),
                    "store": prediction.store, "complete": True}  # fmt: skip
            if role == ROLES[1]:
                meta["overlay"] = self.overlay.to_dict()
            ly.metadata["phoenix"], ly.name = meta, name

    def abandon(self) -> None:
        """Mark the layers of a run that did not finish as incomplete (name and metadata)."""
        if self.complete or not self.arrays or not self.alive():
            return  # finished, never started (an earlier run's layers stay as they were), or deleted
        self.refresh()
        for ly, name in zip(self.layers, self.names, strict=True):
            ly.metadata["phoenix"] = {**ly.metadata["phoenix"], "complete": False}
            ly.name = name + INCOMPLETE


class OverlayControls(QGroupBox):
    """Mean / max, boost, flip and invert of the composite layers; ``changed`` carries the new settings."""

    changed = Signal(object)

    def __init__(self, parent=None):
        super().__init__("Composite (live)", parent)
        default = OverlaySettings()
        self.how_combo = QComboBox(toolTip="Mean or maximum of the windows' maps")
        self.how_combo.addItems(["mean", "max"])
        self.how_combo.setCurrentText(default.how)
        self.boost_spin = QDoubleSpinBox(minimum=0.1, maximum=100.0, singleStep=0.5, decimals=2, value=default.boost)
        self.boost_spin.setToolTip("Multiply, then cap at 1 (the title image used 3)")
        self.flip_check = QCheckBox("Flip left-right", checked=default.flip)
        self.invert_check = QCheckBox("Invert", checked=default.invert)
        checks = QHBoxLayout()
        checks.addWidget(self.flip_check)
        checks.addWidget(self.invert_check)
        checks.addStretch(1)
        form = QFormLayout(self)
        form.addRow("Combine", self.how_combo)
        form.addRow("Boost", self.boost_spin)
        form.addRow("", checks)
        for sig in (self.how_combo.currentIndexChanged, self.boost_spin.valueChanged, self.flip_check.toggled,
                    self.invert_check.toggled):  # fmt: skip
            sig.connect(lambda *_: self.changed.emit(self.settings()))

    def settings(self) -> OverlaySettings:
        """The settings the controls show.

        Returns
        -------
        OverlaySettings
        """
        return OverlaySettings(how=self.how_combo.currentText(), boost=self.boost_spin.value(),
                               flip=self.flip_check.isChecked(), invert=self.invert_check.isChecked())  # fmt: skip


def duration(seconds: float) -> str:
    """A rough duration for a status line ("40 s", "12 min", "3 h 5 min")."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
