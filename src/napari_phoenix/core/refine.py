"""Refinement: ink and ignore proposals from predictions, versioned label rounds, comparisons.

The prize's labels "were iteratively refined and cleaned over various rounds
of training and inference", the ignore mask covering what the model was unsure
about. Here a round is a saved pair of masks with where they came from:

``<chunk>/label.png`` and ``<chunk>/ignore.png`` (the prize layout, the
previous files kept in ``.history/``) and ``<chunk>/rounds/round-NNN/`` with
the same two masks and ``round.json`` (the checkpoint and prediction they came
from, who, when, a note, statistics). A round folder is written under a
temporary name and renamed when complete, and never replaced: a crash or a
full disk leaves no half round, and every earlier round stays.
"""

from __future__ import annotations

import datetime as _dt
import functools
import getpass
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from .compare import (
    DIFF_CODES,
    PREDICTION_CODES,
    Swipe,
    compare_masks,
    compare_predictions,
    compare_rounds,
)
from .errors import PhoenixError

__all__ = ["DIFF_CODES", "PREDICTION_CODES", "RefineError", "Round", "Swipe", "compare_masks", "compare_predictions",
           "compare_rounds", "evaluate", "list_rounds", "propose_ignore", "propose_ink", "restore_round",
           "save_round"]  # fmt: skip

ROUNDS = "rounds"
_ROUND = re.compile(r"round-(\d{3,})")


class RefineError(PhoenixError, ValueError):
    """Proposal settings or rounds that cannot be used."""


def _array(a: Any) -> np.ndarray:
    a = a.compute() if hasattr(a, "compute") else a
    return np.asarray(a)


# ---------------------------------------------------------------------------------------- proposals
def propose_ink(prob: Any, threshold: float = 0.5, min_size: int = 64, max_hole: int = 64) -> np.ndarray:
    """An ink proposal from a probability map: threshold, drop specks, fill small holes.

    Parameters
    ----------
    prob : array-like
        ``(Y, X)`` probabilities in 0..1.
    threshold : float
        Ink where ``prob >= threshold``.
    min_size : int
        Connected ink smaller than this many pixels is dropped (0: keep all).
    max_hole : int
        Holes inside ink up to this many pixels are filled (0: none).

    Returns
    -------
    numpy.ndarray
        bool ``(Y, X)``.
    """
    from skimage.morphology import remove_small_holes, remove_small_objects

    if not 0 <= threshold <= 1:
        raise RefineError(f"threshold must be between 0 and 1; got {threshold}")
    ink = _array(prob) >= threshold
    if min_size > 1:
        ink = remove_small_objects(ink, max_size=min_size - 1) if _has_max_size() else remove_small_objects(ink, min_size)
    if max_hole > 0:
        ink = remove_small_holes(ink, max_size=max_hole) if _has_max_size() else remove_small_holes(ink, max_hole)
    return ink


@functools.cache
def _has_max_size() -> bool:  # scikit-image 0.26 renamed min_size / area_threshold to max_size
    import inspect

    from skimage.morphology import remove_small_objects

    return "max_size" in inspect.signature(remove_small_objects).parameters


def propose_ignore(
    prob: Any,
    band: tuple[float, float] = (0.3, 0.7),
    windows: Any = None,
    spread: float = 0.15,
    margin: int = 4,
    mask: Any = None,
) -> np.ndarray:
    """An ignore proposal where the model is unsure, grown by a margin.

    A pixel is proposed when its probability lies inside ``band``, or when the
    per-window maps (or TTA variants) disagree: their standard deviation is
    above ``spread``. The union is grown by ``margin`` px (Euclidean) and cut to
    the papyrus ``mask``.

    Parameters
    ----------
    prob : array-like
        ``(Y, X)`` probabilities (e.g. the composite).
    band : (float, float)
        Low and high probability of the unsure band.
    windows : array-like, optional
        ``(n, Y, X)`` maps whose disagreement counts (e.g. windows 3, 4, 5).
    spread : float
        Standard deviation across ``windows`` above which a pixel is unsure.
    margin : int
        Growth in pixels.
    mask : array-like, optional
        Papyrus mask; nothing is proposed outside it.

    Returns
    -------
    numpy.ndarray
        bool ``(Y, X)``.
    """
    from scipy import ndimage as ndi

    lo, hi = band
    if not 0 <= lo < hi <= 1:
        raise RefineError(f"the unsure band must satisfy 0 <= low < high <= 1; got {band}")
    p = _array(prob).astype(np.float32, copy=False)
    unsure = (p > lo) & (p < hi)
    if windows is not None:
        w = _array(windows).astype(np.float32, copy=False)
        if w.ndim != 3 or w.shape[1:] != p.shape:
            raise RefineError(f"windows must be (n, {p.shape[0]}, {p.shape[1]}); got {w.shape}")
        unsure |= w.std(axis=0) > spread
    if margin > 0 and unsure.any():
        unsure = ndi.distance_transform_edt(~unsure) <= margin
    if mask is not None:
        unsure &= _array(mask) != 0
    return unsure


# ---------------------------------------------------------------------------------------- metrics
def evaluate(prob: Any, label: Any, ignore: Any = None, mask: Any = None, threshold: float = 0.5) -> dict[str, float]:
    """A prediction against labels, over kept pixels (not ignored, inside the mask).

    Returns
    -------
    dict
        ``iou``, ``f1``, ``precision``, ``recall``, ``tp``, ``fp``, ``fn``, ``kept``.
    """
    pred = _array(prob) >= threshold
    ink = _array(label) != 0
    keep = np.ones(ink.shape, bool) if ignore is None else _array(ignore) == 0
    if mask is not None:
        keep &= _array(mask) != 0
    ink &= keep
    tp, fp, fn = int((pred & ink).sum()), int((pred & ~ink & keep).sum()), int((~pred & ink).sum())
    iou = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"iou": iou, "f1": f1, "precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn,
            "kept": int(keep.sum())}  # fmt: skip


# ---------------------------------------------------------------------------------------- rounds
@dataclass(frozen=True)
class Round:
    """A saved round: its number, folder and record (``round.json``)."""

    number: int
    folder: Path
    record: dict

    @property
    def label_path(self) -> Path:
        return self.folder / "label.png"

    @property
    def ignore_path(self) -> Path:
        return self.folder / "ignore.png"

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        from .masks import read_mask

        return read_mask(self.label_path), read_mask(self.ignore_path)


def list_rounds(chunk: str | os.PathLike) -> list[Round]:
    """The complete rounds of a chunk folder, oldest first."""
    folder = Path(chunk) / ROUNDS
    out = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else ():
        m = _ROUND.fullmatch(p.name)
        if m and (p / "round.json").is_file():
            out.append(Round(int(m[1]), p, json.loads((p / "round.json").read_text(encoding="utf-8"))))
    return sorted(out, key=lambda r: r.number)


def _stats(label: np.ndarray, ignore: np.ndarray) -> dict[str, int]:
    return {"ink_px": int(label.sum()), "ignore_px": int(ignore.sum()), "ink_under_ignore_px": int((label & ignore).sum())}


def save_round(
    chunk: str | os.PathLike,
    label: Any,
    ignore: Any,
    *,
    note: str = "",
    checkpoint: str | os.PathLike | None = None,
    prediction: dict | str | None = None,
    author: str | None = None,
) -> Round:
    """Save ``label.png`` + ``ignore.png`` in the chunk and record a new round.

    Parameters
    ----------
    chunk : path-like
        The chunk (or segment) folder.
    label, ignore : array-like
        ``(Y, X)`` masks (nonzero = set).
    note : str
        A short note (what was changed and why).
    checkpoint : path-like, optional
        The model whose prediction the labels were refined from (name and SHA-256 recorded).
    prediction : dict or str, optional
        The prediction's provenance (dict) or its store path.
    author : str, optional
        Who; default the login name.

    Returns
    -------
    Round
    """
    from .masks import write_mask

    chunk = Path(chunk)
    label, ignore = _array(label) != 0, _array(ignore) != 0
    if label.ndim != 2 or label.shape != ignore.shape:
        raise RefineError(f"label and ignore must be 2-D masks of one shape; got {label.shape} and {ignore.shape}")
    rounds = chunk / ROUNDS
    rounds.mkdir(parents=True, exist_ok=True)
    for stale in rounds.glob(".round-*.partial"):  # what a crash left: never a round
        shutil.rmtree(stale, ignore_errors=True)
    record = {"note": note, "author": author or _user(), "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
              "code_version": __version__, "shape": list(label.shape), "stats": _stats(label, ignore)}  # fmt: skip
    if checkpoint:
        from .model.checkpoint import file_sha256

        record["checkpoint"] = {"name": Path(checkpoint).name, "sha256": file_sha256(checkpoint)}
    if prediction is not None:
        record["prediction"] = prediction if isinstance(prediction, dict) else {"store": str(prediction)}
    number = max((r.number for r in list_rounds(chunk)), default=0) + 1
    while True:
        partial = rounds / f".round-{number:03d}.partial"
        try:
            partial.mkdir()
            break
        except FileExistsError:
            number += 1
    try:
        write_mask(partial / "label.png", label, keep_history=False)
        write_mask(partial / "ignore.png", ignore, keep_history=False)
        (partial / "round.json").write_text(json.dumps({"round": number, **record}, indent=2) + "\n")
        final = rounds / f"round-{number:03d}"
        if final.exists():
            raise RefineError(f"{final} appeared meanwhile; nothing was overwritten, save again")
        os.rename(partial, final)  # atomic: the round appears complete or not at all
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    # the prize layout, previous versions kept in .history/
    write_mask(chunk / "label.png", label)
    write_mask(chunk / "ignore.png", ignore)
    return Round(number, final, {"round": number, **record})


def restore_round(chunk: str | os.PathLike, number: int, note: str | None = None) -> Round:
    """Make round ``number`` current again: its masks become label.png / ignore.png, as a new round."""
    found = {r.number: r for r in list_rounds(chunk)}
    if number not in found:
        raise RefineError(f"{chunk} has no round {number}; it has {sorted(found) or 'none'}")
    label, ignore = found[number].masks()
    return save_round(chunk, label, ignore, note=note or f"restored round {number}",
                      prediction=found[number].record.get("prediction"))  # fmt: skip


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001  (no login name in some containers)
        return "unknown"
