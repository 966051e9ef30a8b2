"""Dock widget "Refine labels": from predictions to ink labels and ignore masks, in versioned rounds.

Thin glue over :mod:`napari_phoenix.core.refine`. Tabs:

* **Propose**: an ink proposal (threshold, speck and hole sizes, live) and an
  ignore proposal (unsure band, disagreement of the windows, margin) from a
  prediction layer, as Labels layers to touch up, then Accept (replace or add
  to the ink / ignore layer) or Discard.
* **Paint**: brush presets and keys (I ink, G ignore, E eraser), erase ignore
  where ink is painted and the reverse, a layer of ink under ignore, opacity
  presets (:class:`~.paint_panel.PaintPanel`).
* **Rounds** and **Evaluate** (:mod:`.rounds_panel`).
* **Compare**: two rounds or two predictions: difference layer, statistics,
  blink (K, Shift+K) and swipe (:mod:`.compare_panel`).

Proposals, rounds and evaluations run off the GUI thread (:class:`~.refine_tools.Jobs`);
the prediction is read once and kept while its layer keeps its data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.refine import RefineError, propose_ignore, propose_ink
from .compare_panel import KEYS as COMPARE_KEYS
from .compare_panel import ComparePanel
from .export_panel import sentence, show_status
from .layer_data import MASK_STYLE
from .paint_panel import PaintPanel
from .refine_tools import (
    COLORS,
    KEYS,
    TRANSPARENT,
    Jobs,
    Maps,
    accept,
    defaults,
    editable,
    find_layer,
    level0,
    load_float,
    show_mask,
    threshold_into,
)
from .rounds_panel import EvaluatePanel, RoundsPanel

INK, IGNORE = defaults(propose_ink), defaults(propose_ignore)
#: a prediction larger than this (px) updates its proposal when the slider is released, not while it moves
LIVE_PX = 1 << 24
DEBOUNCE_MS = 150
#: combo -> (layer kind, optional, Phoenix role picked by default)
PICKERS = {"prediction": ("image2", False, "prediction composite"), "windows": ("image3", True, "prediction windows"),
           "ink": ("labels", False, "label"), "ignore": ("labels", True, "ignore"), "mask": ("labels", True, "mask")}


def _ink_job(load, src, params):
    prob = load(src)
    return prob, None, propose_ink(prob, **params)


def _ignore_job(load, src, windows, mask, params):
    prob = load(src)
    windows = None if windows is None else load(windows)
    return prob, windows, propose_ignore(prob, windows=windows, mask=mask, **params)


class RefineWidget(QWidget):
    """Proposals, painting helpers, label rounds and held-out evaluation for one segment.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer the widget is docked in.
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.jobs = Jobs(lambda text: self.set_status(text, error=True))
        self.maps = Maps()
        self._timers: dict[str, QTimer] = {}
        self._later: dict = {}
        self._layers: dict[str, list] = {}
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self._keys = {"i": lambda v: self.paint.brush("ink"), "g": lambda v: self.paint.brush("ignore"),
                      "e": lambda v: self.paint.eraser(), "k": lambda v: self.compare.flip(),
                      "Shift-K": lambda v: self.compare.toggle_blink()}  # fmt: skip
        for key, fn in self._keys.items():
            self.viewer.bind_key(key, fn, overwrite=True)

    # ---- layout --------------------------------------------------------------------------

    def _build(self) -> None:
        root = QVBoxLayout(self)
        box = QGroupBox("Layers")
        form = QFormLayout(box)
        tips = {"prediction": "Probability map (2-D Image; level 0 of a multiscale one)",
                "windows": "Per-window maps: where they disagree is proposed as ignore",
                "ink": "Labels layer the ink is accepted into and saved from (label.png)",
                "ignore": "Labels layer of the ignore mask (ignore.png)",
                "mask": "Papyrus mask: nothing is proposed or evaluated outside it"}  # fmt: skip
        self.combos = {role: QComboBox(toolTip=tips[role]) for role in PICKERS}
        for role, combo in self.combos.items():
            combo.currentIndexChanged.connect(lambda _=0, r=role: self._picked(r))
            form.addRow(role.capitalize(), combo)
        root.addWidget(box)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_proposals(), "Propose")
        self.paint = PaintPanel(self)
        self.rounds = RoundsPanel(self)
        self.evaluation = EvaluatePanel(self)
        self.compare = ComparePanel(self)
        for panel, title in ((self.paint, "Paint"), (self.rounds, "Rounds"), (self.compare, "Compare"),
                             (self.evaluation, "Evaluate")):
            self.tabs.addTab(panel, title)
        root.addWidget(self.tabs, 1)
        self.status = QLabel(wordWrap=True, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        keys = {**KEYS, **{k.replace("-", "+"): v for k, v in COMPARE_KEYS.items()}}
        self.status.setToolTip("Keys: " + ", ".join(f"{k} {v}" for k, v in keys.items()))
        root.addWidget(self.status)

    def _build_proposals(self) -> QWidget:
        page = QWidget()
        root = QVBoxLayout(page)
        ink = QGroupBox("Ink proposal")
        form = QFormLayout(ink)
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=1000,
                                        value=round(INK["threshold"] * 1000))  # fmt: skip
        self.threshold_label = QLabel(f"{self.threshold:.3f}", minimumWidth=40)
        self.threshold_slider.valueChanged.connect(lambda _: self.threshold_label.setText(f"{self.threshold:.3f}"))
        row = QHBoxLayout()
        row.addWidget(self.threshold_slider, 1)
        row.addWidget(self.threshold_label)
        form.addRow("Threshold", row)
        self.min_size_spin = self._spin(INK["min_size"], "Ink specks smaller than this are dropped (0: none)")
        self.max_hole_spin = self._spin(INK["max_hole"], "Holes up to this size are filled (0: none)")
        form.addRow("Min object", self.min_size_spin)
        form.addRow("Max hole", self.max_hole_spin)
        form.addRow(self._buttons("ink"))
        ignore = QGroupBox("Ignore proposal")
        form = QFormLayout(ignore)
        (low, high) = IGNORE["band"]
        self.low_spin, self.high_spin = (self._dspin(v, "Unsure where low < probability < high") for v in (low, high))
        row = QHBoxLayout()
        row.addWidget(self.low_spin)
        row.addWidget(QLabel("to"))
        row.addWidget(self.high_spin)
        form.addRow("Unsure band", row)
        self.spread_spin = self._dspin(IGNORE["spread"], "Windows disagree where their std is above this")
        self.margin_spin = self._spin(IGNORE["margin"], "Grow the unsure pixels by this many px")
        form.addRow("Window spread", self.spread_spin)
        form.addRow("Margin", self.margin_spin)
        form.addRow(self._buttons("ignore"))
        self.accept_combo = QComboBox(toolTip="What Accept does to the ink / ignore layer")
        self.accept_combo.addItems(["replace the layer", "add to the layer (union)"])
        row = QHBoxLayout()
        row.addWidget(QLabel("Accept:"))
        row.addWidget(self.accept_combo, 1)
        for w in (ink, ignore):
            root.addWidget(w)
        root.addLayout(row)
        root.addStretch(1)
        self.threshold_slider.valueChanged.connect(lambda _: self.preview_ink())
        self.threshold_slider.valueChanged.connect(lambda _: self._changed("ink"))
        for spin in (self.min_size_spin, self.max_hole_spin):
            spin.valueChanged.connect(lambda _: self._changed("ink"))
        for spin in (self.low_spin, self.high_spin, self.spread_spin, self.margin_spin):
            spin.valueChanged.connect(lambda _: self._changed("ignore"))
        return page

    def _buttons(self, kind: str) -> QHBoxLayout:
        row = QHBoxLayout()
        for text, slot in ((f"Propose {kind}", self.propose), ("Accept", self.accept), ("Discard", self.discard)):
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, s=slot: s(kind))
            setattr(self, f"{kind}_{text.split()[0].lower()}_button", button)
            row.addWidget(button)
        return row

    @staticmethod
    def _spin(value: int, tip: str) -> QSpinBox:
        spin = QSpinBox(minimum=0, maximum=10_000_000, value=value, suffix=" px", toolTip=tip)
        spin.setKeyboardTracking(False)
        return spin

    @staticmethod
    def _dspin(value: float, tip: str) -> QDoubleSpinBox:
        spin = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, decimals=2, value=value, toolTip=tip)
        spin.setKeyboardTracking(False)
        return spin

    # ---- layers --------------------------------------------------------------------------

    def layer(self, role: str) -> Any:
        """The layer picked for ``role`` (prediction, windows, ink, ignore, mask; None: none)."""
        i = self.combos[role].currentIndex() - PICKERS[role][1]
        found = self._layers.get(role, [])
        return found[i] if 0 <= i < len(found) else None

    def require(self, role: str) -> Any:
        """The layer picked for ``role``, else a RefineError that says what to do."""
        layer = self.layer(role)
        if layer is None:
            if role == "prediction":
                raise RefineError("no prediction layer: predict one with the Predict ink widget, or open a "
                                  "probability map as a 2-D Image layer")  # fmt: skip
            raise RefineError(f"no {role} layer: open a segment folder, or add a Labels layer and pick it as {role}")
        return layer

    def _candidates(self, kind: str) -> list:
        from napari.layers import Image, Labels

        if kind == "labels":
            return [ly for ly in self.viewer.layers if isinstance(ly, Labels)]
        ndim = 2 if kind == "image2" else 3
        return [ly for ly in self.viewer.layers if isinstance(ly, Image) and ly.ndim == ndim
                and ly.metadata.get("phoenix", {}).get("role") != "stack"]  # fmt: skip

    def _refresh_layers(self, event=None) -> None:
        picked = {role: self.layer(role) for role in PICKERS}
        for role, (kind, optional, wanted) in PICKERS.items():
            found = self._layers[role] = self._candidates(kind)
            layer = picked[role]
            if layer not in found:
                mine = [ly for ly in found if ly.metadata.get("phoenix", {}).get("role") == wanted]
                if role == "windows" and self.layer("prediction") is not None:
                    source = self.layer("prediction").metadata.get("phoenix", {}).get("source_layer")
                    mine = [ly for ly in mine if ly.metadata["phoenix"].get("source_layer") == source]
                if not mine and not optional:  # any image; a labels layer the user added
                    mine = [ly for ly in found if kind != "labels" or ly.metadata.get("phoenix", {}).get("role") is None]
                layer = mine[0] if mine else None
            combo = self.combos[role]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([*(["none"] if optional else []), *(ly.name for ly in found)])
            combo.setCurrentIndex(found.index(layer) + optional if layer is not None else (0 if optional else -1))
            combo.blockSignals(False)
        self._picked()

    def _picked(self, role: str | None = None) -> None:
        pred = self.layer("prediction")
        big = pred is not None and int(np.prod(level0(pred).shape[-2:])) > LIVE_PX
        self.threshold_slider.setTracking(not big)  # a big map: recomputed when the slider is released
        if role in (None, "ink", "ignore", "mask"):
            self.rounds.refresh()
            self.paint.watch()
        if role is None:
            self.compare.refresh()

    def segment_folder(self, quiet: bool = False) -> Path | None:
        """The segment folder of the ink / ignore / mask layers (their file's folder, or their stack's)."""
        for role in ("ink", "ignore", "mask"):
            ly = self.layer(role)
            path = ly.metadata.get("phoenix", {}).get("path") if ly is not None else None
            if path:
                return Path(path).parent
        ink = self.layer("ink")
        for ly in self.viewer.layers if ink is not None else ():
            m = ly.metadata.get("phoenix", {})
            if m.get("role") == "stack" and m.get("segment") and level0(ly).shape[-2:] == ink.data.shape[-2:]:
                return Path(m["segment"])
        if quiet:
            return None
        name = ink.name if ink is not None else "the ink layer"
        raise RefineError(f"{name} belongs to no segment folder: open the segment folder (its label.png becomes "
                          "the ink layer) and paint there, or pick its label layer as Ink")  # fmt: skip

    def provenance(self) -> dict:
        """save_round's ``prediction`` and ``checkpoint`` from the prediction layer's metadata."""
        pred = self.layer("prediction")
        if pred is None:
            return {}
        meta = {"prediction_layer": pred.name, **pred.metadata.get("phoenix", {})}
        out = {"prediction": json.loads(json.dumps(meta, default=str))}
        checkpoint = meta.get("checkpoint_path")
        if checkpoint and Path(checkpoint).is_file():
            out["checkpoint"] = checkpoint
        return out

    def placement(self) -> dict:
        """translate / scale of the ink layer, for layers drawn over it."""
        ink = self.layer("ink")
        return {} if ink is None else {"translate": tuple(ink.translate[-2:]), "scale": tuple(ink.scale[-2:])}

    def new_ignore(self, like: Any) -> Any:
        """An empty ignore layer beside ``like`` (ignore.png of the segment when it has one)."""
        folder = self.segment_folder(quiet=True)
        style = MASK_STYLE["ignore"]
        layer = self.viewer.add_labels(np.zeros(like.data.shape, np.uint8), name="ignore", opacity=style["opacity"],
                                       colormap={**TRANSPARENT, 1: style["color"]}, **self.placement(),
                                       metadata={"phoenix": {"role": "ignore", "path": str(folder / "ignore.png")
                                                             if folder else None}})  # fmt: skip
        self.combos["ignore"].setCurrentIndex(self._layers["ignore"].index(layer) + 1)
        return layer

    # ---- proposals -----------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        """The ink threshold the slider shows."""
        return self.threshold_slider.value() / 1000

    def ink_params(self) -> dict:
        """propose_ink's settings in the fields."""
        return {"threshold": self.threshold, "min_size": self.min_size_spin.value(),
                "max_hole": self.max_hole_spin.value()}  # fmt: skip

    def ignore_params(self) -> dict:
        """propose_ignore's settings in the fields (windows and mask are the layers picked)."""
        return {"band": (self.low_spin.value(), self.high_spin.value()), "spread": self.spread_spin.value(),
                "margin": self.margin_spin.value()}  # fmt: skip

    def propose(self, kind: str) -> None:
        """Compute the ink or ignore proposal (off the GUI thread) into "<prediction> <kind> proposal"."""
        win = None
        try:
            pred = self.require("prediction")
            src = self.maps.prob(pred)
            if kind == "ink":
                params = self.ink_params()
                fn, args = _ink_job, (load_float, src, params)
            else:
                params, win, mask = self.ignore_params(), self.layer("windows"), self.layer("mask")
                wsrc = None if win is None else self.maps.windows(win)
                mask = None if mask is None or mask.data.shape != src.shape else mask.data
                fn, args = _ignore_job, (load_float, src, wsrc, mask, params)
        except RefineError as err:
            return self.set_status(sentence(err), error=True)
        self.set_status(f"Proposing {kind} from {pred.name}…")
        self.jobs.submit(f"{kind.capitalize()} proposal", fn, *args,
                         done=lambda res: self._proposed(kind, pred, win, params, *res))

    def _proposed(self, kind, pred, win, params, prob, windows, mask) -> None:
        keep = (pred, win, self.layer("prediction"), self.layer("windows"))
        self.maps.remember(pred, prob, keep)
        if win is not None:
            self.maps.remember(win, windows, keep)
        show_mask(self.viewer, mask, f"{pred.name} {kind} proposal", f"{kind} proposal", COLORS[f"{kind} proposal"],
                  like=pred, source_layer=pred.name, params=params)  # fmt: skip
        how = ", ".join(f"{k} {v}" for k, v in params.items())
        self.set_status(f"{kind.capitalize()} proposal: {int(np.count_nonzero(mask)):,} px ({how}). "
                        "Touch it up, then Accept or Discard.")  # fmt: skip

    def proposal(self, kind: str) -> Any:
        """The proposal layer of the prediction picked (else any of that kind; None: none)."""
        pred = self.layer("prediction")
        found = find_layer(self.viewer, f"{kind} proposal", source_layer=pred.name) if pred is not None else None
        return found if found is not None else find_layer(self.viewer, f"{kind} proposal")

    def preview_ink(self) -> None:
        """Show ``prediction >= threshold`` in the ink proposal at once; the cleaned proposal follows.

        Thresholding is ~40 ms on 10,000 x 14,000 px, removing specks and filling
        holes (the job) seconds: the slider shows its effect before the job ends.
        """
        proposal, pred = self.proposal("ink"), self.layer("prediction")
        prob = None if pred is None else self.maps.get(pred)
        if proposal is None or prob is None or not isinstance(proposal.data, np.ndarray) \
                or proposal.data.shape != prob.shape or proposal.data.dtype.itemsize != 1:  # fmt: skip
            return
        threshold_into(prob, self.threshold, proposal.data)
        proposal.refresh()

    def _changed(self, kind: str) -> None:
        if self.proposal(kind) is not None:  # live once proposed
            self.later(kind, lambda: self.propose(kind))

    def accept(self, kind: str) -> None:
        """Copy the proposal into the ink / ignore layer: replace it or add to it (one undo step)."""
        try:
            proposal = self.proposal(kind)
            if proposal is None:
                raise RefineError(f"nothing to accept: press Propose {kind} first")
            role = "ink" if kind == "ink" else "ignore"
            target = self.layer(role)
            if target is None:
                target = self.new_ignore(self.require("ink")) if role == "ignore" else self.require("ink")
            union = self.accept_combo.currentIndex() == 1
            n = accept(target, editable(proposal), union)
        except RefineError as err:
            return self.set_status(sentence(err), error=True)
        self.paint.update_overlap()
        self.set_status(f"{'Added' if union else 'Copied'} {proposal.name} into {target.name}: {n:,} px changed "
                        "(Ctrl+Z undoes it).")  # fmt: skip

    def discard(self, kind: str) -> None:
        """Remove the proposal layer."""
        proposal = self.proposal(kind)
        if proposal is not None:
            self.viewer.layers.remove(proposal)
            self.set_status(f"Discarded {proposal.name}.")

    # ---- plumbing ------------------------------------------------------------------------

    def later(self, key: str, fn, ms: int = DEBOUNCE_MS) -> None:
        """Call ``fn`` once, ``ms`` after the last request with this key (debounce)."""
        self._later[key] = fn
        if key not in self._timers:
            self._timers[key] = QTimer(self, singleShot=True)
            self._timers[key].timeout.connect(lambda: self._later[key]())
        self._timers[key].start(ms)

    @property
    def busy(self) -> bool:
        """A job runs or waits, or a debounced update is due."""
        return self.jobs.busy or any(t.isActive() for t in self._timers.values())

    def set_status(self, text: str, error: bool = False) -> None:
        """Show a sentence under the tabs (red for errors)."""
        show_status(self.status, text, error)

    def closeEvent(self, event) -> None:
        """Give the keys back and stop blinking and swiping when the widget closes."""
        from napari.utils.key_bindings import coerce_keybinding

        for key, fn in self._keys.items():
            if self.viewer.keymap.get(coerce_keybinding(key)) is fn:
                self.viewer.bind_key(key, None)
        self.compare.stop()
        super().closeEvent(event)
