"""The Rounds and Evaluate tabs of the "Refine labels" widget.

Rounds: save the ink / ignore layers as a new round of the segment
(:func:`~napari_phoenix.core.refine.save_round`, off the GUI thread), list the
rounds, load one as layers, restore one, compare two (or one with the current
layers) as a difference layer with statistics, and blink the two compared.
Evaluate: a prediction against the ink / ignore / mask layers, one table row
per evaluation (:func:`~napari_phoenix.core.refine.evaluate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.refine import (
    DIFF_CODES,
    RefineError,
    compare_rounds,
    evaluate,
    list_rounds,
    restore_round,
    save_round,
)
from .export_panel import sentence
from .refine_tools import (
    COLORS,
    DIFF_COLORS,
    TRANSPARENT,
    defaults,
    find_layer,
    load_float,
    show_mask,
)

CURRENT = "current layers"
BLINK_MS = 600


def _table(headers: list[str], stretch: int, tips: dict | None = None) -> QTableWidget:
    """A read-only table of rows; column ``stretch`` takes the width left (long names are elided)."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    for col, tip in (tips or {}).items():
        table.horizontalHeaderItem(col).setToolTip(tip)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    table.setMinimumHeight(110)
    return table


def _fill(table: QTableWidget, row: int, values: list) -> None:
    for col, value in enumerate(values):
        table.setItem(row, col, QTableWidgetItem(str(value)))


def _save(folder, label, ignore, kwargs):
    return save_round(folder, label, ignore, **kwargs)


def _restore(folder, number):
    from ..core.masks import read_mask

    found = restore_round(folder, number)
    return found, read_mask(Path(folder) / "label.png"), read_mask(Path(folder) / "ignore.png")


def _compare(a, b):
    return compare_rounds(a, b)


class RoundsPanel(QWidget):
    """Save round, the rounds list, Load as layers, Restore, Compare with…, Blink.

    Parameters
    ----------
    host : RefineWidget
        Gives the viewer, the layers, the segment folder, the job runner and the status line.
    """

    def __init__(self, host: Any):
        super().__init__()
        self.host = host
        self.rounds: list = []
        self.folder: Path | None = None
        self.compared: tuple = ()  # (a, b): a round number or CURRENT each
        self.stats: dict = {}
        self._blink_layers: list = []
        self._blink_visible: list = []
        self.blink_timer = QTimer(self, interval=BLINK_MS)
        self.blink_timer.timeout.connect(self._blink_step)
        root = QVBoxLayout(self)
        row = QHBoxLayout()
        self.note_edit = QLineEdit(placeholderText="note: what changed and why")
        self.save_button = QPushButton("Save round", toolTip="label.png + ignore.png, and a new rounds/round-NNN")
        self.save_button.clicked.connect(self.save)
        row.addWidget(self.note_edit, 1)
        row.addWidget(self.save_button)
        root.addLayout(row)
        self.table = _table(["#", "Date (UTC)", "Author", "Note", "Ink px"], stretch=3)
        root.addWidget(self.table, 1)
        row = QHBoxLayout()
        self.load_button = QPushButton("Load as layers")
        self.load_button.clicked.connect(self.load)
        self.restore_button = QPushButton("Restore", toolTip="Make the selected round current (as a new round)")
        self.restore_button.clicked.connect(self.restore)
        row.addWidget(self.load_button)
        row.addWidget(self.restore_button)
        root.addLayout(row)
        row = QHBoxLayout()
        self.with_combo = QComboBox(toolTip="What the selected round is compared with")
        self.compare_button = QPushButton("Compare with…")
        self.compare_button.clicked.connect(self.compare)
        self.blink_button = QPushButton("Blink", checkable=True, toolTip="Show the two compared labels in turn")
        self.blink_button.toggled.connect(self.blink)
        row.addWidget(self.compare_button)
        row.addWidget(self.with_combo, 1)
        row.addWidget(self.blink_button)
        root.addLayout(row)
        legend = " ".join(f"<span style='color:{DIFF_COLORS[k]}'>■</span> {DIFF_CODES[k]}" for k in DIFF_COLORS)
        self.stats_label = QLabel(wordWrap=True)
        root.addWidget(self.stats_label)
        root.addWidget(QLabel(legend, wordWrap=True))

    # ---- list ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """List the rounds of the segment of the ink layer picked."""
        self.folder = self.host.segment_folder(quiet=True)
        self.rounds = list_rounds(self.folder) if self.folder else []
        self.table.setRowCount(len(self.rounds))
        for i, r in enumerate(self.rounds):
            rec = r.record
            _fill(self.table, i, [r.number, str(rec.get("date", ""))[:16].replace("T", " "), rec.get("author", ""),
                                  rec.get("note", ""), f"{rec.get('stats', {}).get('ink_px', 0):,}"])  # fmt: skip
        self.with_combo.clear()
        self.with_combo.addItems([CURRENT, *(f"round {r.number}" for r in self.rounds)])
        if self.rounds and not self.table.selectedItems():
            self.table.selectRow(len(self.rounds) - 1)

    def selected(self):
        """The round selected in the list (else a RefineError)."""
        rows = {i.row() for i in self.table.selectedItems()}
        if not rows or not self.rounds:
            raise RefineError("no round selected: save a round first, then pick it in the list")
        return self.rounds[min(rows)]

    def _round(self, number: int):
        return next(r for r in self.rounds if r.number == number)

    # ---- actions -------------------------------------------------------------------------

    def save(self) -> None:
        """Save the ink and ignore layers as a new round (off the GUI thread)."""
        try:
            folder = self.host.segment_folder()
            ink = self.host.require("ink")
            label = ink.data != 0  # a snapshot: painting may go on while it is written
            ignore = self.host.layer("ignore")
            ignore = np.zeros_like(label) if ignore is None else np.asarray(ignore.data) != 0
            kwargs = {"note": self.note_edit.text().strip(), **self.host.provenance()}
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        self.host.set_status(f"Saving a round in {folder}…")
        self.host.jobs.submit("Save round", _save, folder, label, ignore, kwargs, done=self._saved)

    def _saved(self, saved) -> None:
        self.note_edit.clear()
        self.refresh()
        self.table.selectRow(len(self.rounds) - 1)
        self.host.set_status(f"Saved round {saved.number} in {saved.folder} "
                             f"({saved.record['stats']['ink_px']:,} px of ink).")  # fmt: skip

    def load(self) -> None:
        """Add the selected round's masks as "round N label" and "round N ignore" layers."""
        try:
            r = self.selected()
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        self.host.jobs.submit("Load round", r.masks, done=lambda m: self._loaded(r.number, *m))

    def _loaded(self, number: int, label: np.ndarray, ignore: np.ndarray) -> None:
        like = self.host.layer("ink")
        for kind, mask in (("label", label), ("ignore", ignore)):
            show_mask(self.host.viewer, mask, f"round {number} {kind}", f"round {kind}", COLORS[f"round {kind}"],
                      like=like, round=number)  # fmt: skip
        self.host.set_status(f"Round {number} shown as 'round {number} label' and 'round {number} ignore'.")

    def restore(self) -> None:
        """Make the selected round current (label.png, ignore.png, a new round), then reload the layers."""
        try:
            r, folder = self.selected(), self.host.segment_folder()
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        self.host.jobs.submit("Restore", _restore, folder, r.number, done=lambda res: self._restored(r.number, *res))

    def _restored(self, number: int, saved, label: np.ndarray, ignore: np.ndarray) -> None:
        ink = self.host.require("ink")
        ink.data = label.view(np.uint8)
        target = self.host.layer("ignore")
        target = self.host.new_ignore(ink) if target is None else target
        target.data = ignore.view(np.uint8)
        self.refresh()
        self.host.set_status(f"Restored round {number} as round {saved.number}; {ink.name} and {target.name} "
                             "were reloaded from label.png and ignore.png.")  # fmt: skip

    def _pair(self, which):
        if which == CURRENT:
            ink = self.host.require("ink")
            ignore = self.host.layer("ignore")
            return np.asarray(ink.data) != 0, (np.zeros(ink.data.shape, bool) if ignore is None
                                               else np.asarray(ignore.data) != 0)  # fmt: skip
        return self._round(which)

    def compare(self) -> None:
        """A difference layer and statistics: the selected round -> the round (or current layers) chosen."""
        try:
            a = self.selected().number
            text = self.with_combo.currentText()
            b = CURRENT if text == CURRENT else int(text.split()[-1])
            pair_a, pair_b = self._pair(a), self._pair(b)
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        self.stop_blink()
        self.host.jobs.submit("Compare", _compare, pair_a, pair_b, done=lambda res: self._compared(a, b, *res))

    def _compared(self, a, b, diff: np.ndarray, stats: dict) -> None:
        self.compared, self.stats = (a, b), stats
        name = f"round {a} → {b if b == CURRENT else f'round {b}'}"
        layer = find_layer(self.host.viewer, "round diff")
        if layer is not None:
            layer.data, layer.name, layer.metadata["phoenix"]["pair"] = diff, name, [a, b]
        else:
            self.host.viewer.add_labels(diff, name=name, colormap={**TRANSPARENT, **DIFF_COLORS}, opacity=0.9,
                                        metadata={"phoenix": {"role": "round diff", "pair": [a, b]}},
                                        **self.host.placement())  # fmt: skip
        s = stats
        self.stats_label.setText(
            f"<b>{name}</b><br>Ink {s['ink_a']:,} → {s['ink_b']:,} px "
            f"(<span style='color:{DIFF_COLORS[1]}'>+{s['ink_added']:,}</span> / "
            f"<span style='color:{DIFF_COLORS[2]}'>−{s['ink_removed']:,}</span>), IoU {s['ink_iou']:.3f}<br>"
            f"Ignore {s['ignore_a']:,} → {s['ignore_b']:,} px "
            f"(<span style='color:{DIFF_COLORS[3]}'>+{s['ignore_added']:,}</span> / "
            f"<span style='color:{DIFF_COLORS[4]}'>−{s['ignore_removed']:,}</span>)")  # fmt: skip
        self.host.set_status(f"Compared: {name}.")

    # ---- blink ---------------------------------------------------------------------------

    def _label_layer(self, which):
        if which == CURRENT:
            return self.host.require("ink")
        layer = find_layer(self.host.viewer, "round label", round=which)
        if layer is None:
            label, ignore = self._round(which).masks()
            self._loaded(which, label, ignore)
            layer = find_layer(self.host.viewer, "round label", round=which)
        return layer

    def blink(self, on: bool) -> None:
        """Show the two compared labels in turn (on), or both as they were (off)."""
        if not on:
            return self.stop_blink()
        try:
            if not self.compared:
                raise RefineError("compare two rounds first (Compare with…), then blink them")
            self._blink_layers = [self._label_layer(w) for w in self.compared]
        except RefineError as err:
            self.blink_button.setChecked(False)
            return self.host.set_status(sentence(err), error=True)
        self._blink_visible, self._phase = [ly.visible for ly in self._blink_layers], False
        self._blink_step()
        self.blink_timer.start()

    def _blink_step(self) -> None:
        self._phase = not self._phase
        alive = [ly for ly in self._blink_layers if ly in self.host.viewer.layers]
        if len(alive) < 2:
            return self.stop_blink()
        a, b = alive
        a.visible, b.visible = self._phase, not self._phase
        self.host.set_status(f"Blink: {(a if self._phase else b).name}")

    def stop_blink(self) -> None:
        """Stop blinking; the two layers get their visibility back."""
        self.blink_timer.stop()
        for ly, visible in zip(self._blink_layers, self._blink_visible, strict=False):
            ly.visible = visible
        self._blink_layers, self._blink_visible = [], []
        if self.blink_button.isChecked():
            self.blink_button.blockSignals(True)
            self.blink_button.setChecked(False)
            self.blink_button.blockSignals(False)


def _evaluate(load, prob_src, label, ignore, mask, threshold):
    prob = load(prob_src)
    return prob, evaluate(prob, label, ignore, mask, threshold)


class EvaluatePanel(QWidget):
    """The prediction picked against the ink / ignore / mask layers: one row per evaluation.

    Parameters
    ----------
    host : RefineWidget
        Gives the prediction and label layers, the job runner and the status line.
    """

    HEADERS = ("Prediction", "Thr.", "IoU", "F1", "Prec.", "Rec.", "Kept px")

    def __init__(self, host: Any):
        super().__init__()
        self.host = host
        self.results: list[dict] = []
        root = QVBoxLayout(self)
        row = QHBoxLayout()
        self.threshold_spin = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, decimals=2,
                                             value=defaults(evaluate)["threshold"], prefix="threshold ")  # fmt: skip
        self.evaluate_button = QPushButton("Evaluate", toolTip="Over kept pixels: not ignored, inside the mask")
        self.evaluate_button.clicked.connect(self.evaluate)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clear)
        for w in (self.threshold_spin, self.evaluate_button, clear):
            row.addWidget(w)
        root.addLayout(row)
        tips = {1: "Threshold", 4: "Precision", 5: "Recall", 6: "Pixels evaluated: not ignored, inside the mask"}
        self.table = _table(list(self.HEADERS), stretch=0, tips=tips)
        root.addWidget(self.table, 1)

    def evaluate(self) -> None:
        """Add a row: the prediction picked, thresholded, against the labels picked (off the GUI thread)."""
        try:
            pred, ink = self.host.require("prediction"), self.host.require("ink")
            label = np.asarray(ink.data) != 0
            ignore, mask = (None if ly is None else np.asarray(ly.data) != 0
                            for ly in (self.host.layer("ignore"), self.host.layer("mask")))  # fmt: skip
            src = self.host.maps.prob(pred, label.shape)
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        threshold = self.threshold_spin.value()
        self.host.jobs.submit("Evaluate", _evaluate, load_float, src, label, ignore, mask, threshold,
                              done=lambda res: self._done(pred, threshold, *res))  # fmt: skip

    def _done(self, pred, threshold: float, prob: np.ndarray, metrics: dict) -> None:
        self.host.maps.remember(pred, prob, (self.host.layer("prediction"), self.host.layer("windows")))
        self.results.append({"prediction": pred.name, "threshold": threshold, **metrics})
        row = self.table.rowCount()
        self.table.setRowCount(row + 1)
        _fill(self.table, row, [pred.name, f"{threshold:.2f}", *(f"{metrics[k]:.3f}" for k in
                                ("iou", "f1", "precision", "recall")), f"{metrics['kept']:,}"])  # fmt: skip
        self.host.set_status(f"{pred.name} at {threshold:.2f}: IoU {metrics['iou']:.3f}, F1 {metrics['f1']:.3f}.")

    def clear(self) -> None:
        """Empty the table."""
        self.results.clear()
        self.table.setRowCount(0)
