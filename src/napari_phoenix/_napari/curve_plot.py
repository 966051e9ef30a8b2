"""A small QPainter plot of the contrast curve, with draggable control points.

No matplotlib: the curve is the 8-bit lookup table of the points (what
:func:`napari_phoenix.core.contrast.contrast_lut` gives), drawn over the
identity line. Dragging a point emits :attr:`CurvePlot.points_edited` when the
mouse is released; while dragging, only the drawing follows.
"""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import QPointF, QRectF, QSize, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from ..core.contrast import ContrastError, contrast_lut

Points = tuple[tuple[float, float], ...]
_MARGIN = (34, 8, 8, 20)  # left, top, right, bottom, px
_GRAB_PX = 8


class CurvePlot(QWidget):
    """The contrast curve over input codes 0–255 (x) -> output codes 0–255 (y).

    Parameters
    ----------
    parent : QWidget, optional
        The parent widget.
    """

    #: emitted with the new points (tuple of (x, y)) after a point is dragged
    points_edited = Signal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._points: Points = ()
        self._lut = None
        self._drag: int | None = None
        self.setMinimumSize(180, 150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setMouseTracking(False)
        self.setToolTip("Contrast curve: input code (x) to output code (y).\nDrag a point to move it.")

    def sizeHint(self) -> QSize:
        return QSize(260, 200)

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        left, top, right, bottom = _MARGIN
        return max(150, min(320, width - left - right + top + bottom))

    @property
    def points(self) -> Points:
        """The control points shown, in 8-bit codes."""
        return self._points

    def set_points(self, points: Sequence[Sequence[float]]) -> None:
        """Show ``points`` and their curve (invalid points are drawn without a curve).

        Parameters
        ----------
        points : sequence of (x, y)
            Control points in 8-bit codes.
        """
        self._points = tuple((float(x), float(y)) for x, y in points)
        try:
            self._lut = contrast_lut("uint8", self._points)
        except ContrastError:
            self._lut = None
        self.update()

    # ---- geometry ------------------------------------------------------------------------

    def _frame(self) -> QRectF:
        left, top, right, bottom = _MARGIN
        side = max(10, min(self.width() - left - right, self.height() - top - bottom))
        x0 = left + max(0, (self.width() - left - right - side) // 2)  # centred
        return QRectF(x0, top, side, side)

    def _to_px(self, x: float, y: float) -> QPointF:
        f = self._frame()
        return QPointF(f.left() + x / 255 * f.width(), f.bottom() - y / 255 * f.height())

    def _to_code(self, pos: QPointF) -> tuple[float, float]:
        f = self._frame()
        x = (pos.x() - f.left()) / f.width() * 255
        y = (f.bottom() - pos.y()) / f.height() * 255
        return min(255.0, max(0.0, round(x))), min(255.0, max(0.0, round(y)))

    # ---- drawing -------------------------------------------------------------------------

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fg = pal.color(pal.ColorRole.WindowText)
        frame = self._frame()
        p.fillRect(frame, pal.color(pal.ColorRole.Base))
        grid = QColor(fg)
        grid.setAlpha(50)
        p.setPen(QPen(grid, 1))
        for code in (64, 128, 192):
            p.drawLine(self._to_px(code, 0), self._to_px(code, 255))
            p.drawLine(self._to_px(0, code), self._to_px(255, code))
        p.setPen(QPen(grid, 1, Qt.PenStyle.DashLine))
        p.drawLine(self._to_px(0, 0), self._to_px(255, 255))  # identity
        p.setPen(QPen(fg, 1))
        p.drawRect(frame)
        font = p.font()
        font.setPointSizeF(max(6.0, font.pointSizeF() * 0.8))
        p.setFont(font)
        for code in (0, 128, 255):
            pt = self._to_px(code, 0)
            p.drawText(QRectF(pt.x() - 15, frame.bottom() + 2, 30, 14), Qt.AlignmentFlag.AlignHCenter, str(code))
            pt = self._to_px(0, code)
            p.drawText(QRectF(frame.left() - 40, pt.y() - 7, 32, 14), Qt.AlignmentFlag.AlignRight, str(code))
        if self._lut is not None:
            path = QPainterPath(self._to_px(0, float(self._lut[0])))
            for code in range(1, 256):
                path.lineTo(self._to_px(code, float(self._lut[code])))
            p.setPen(QPen(QColor("#f0a020"), 2))
            p.drawPath(path)
        p.setPen(QPen(fg, 1))
        for i, (x, y) in enumerate(self._points):
            p.setBrush(QColor("#ffd060") if i == self._drag else QColor("#3090ff"))
            p.drawEllipse(self._to_px(x, y), 4.5, 4.5)
        p.end()

    # ---- dragging ------------------------------------------------------------------------

    def mousePressEvent(self, event) -> None:
        pos = event.position()
        best, best_d = None, _GRAB_PX**2
        for i, (x, y) in enumerate(self._points):
            q = self._to_px(x, y)
            d = (q.x() - pos.x()) ** 2 + (q.y() - pos.y()) ** 2
            if d <= best_d:
                best, best_d = i, d
        self._drag = best
        self.update()

    def mouseMoveEvent(self, event) -> None:
        if self._drag is None:
            return
        x, y = self._to_code(event.position())
        pts = list(self._points)
        i = self._drag
        lo = pts[i - 1][0] + 1 if i > 0 else 0.0  # keep x strictly increasing
        hi = pts[i + 1][0] - 1 if i + 1 < len(pts) else 255.0
        pts[i] = (min(hi, max(lo, x)), y)
        drag = self._drag
        self.set_points(pts)
        self._drag = drag

    def mouseReleaseEvent(self, event) -> None:
        if self._drag is None:
            return
        self._drag = None
        self.update()
        self.points_edited.emit(self._points)
