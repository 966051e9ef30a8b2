"""Refinement: proposals with known answers, rounds that are never lost, comparisons, evaluation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_phoenix.core.masks import mask_history, read_mask
from napari_phoenix.core.refine import (
    RefineError,
    compare_rounds,
    evaluate,
    list_rounds,
    propose_ignore,
    propose_ink,
    restore_round,
    save_round,
)


def _prob():
    p = np.full((100, 120), 0.1, np.float32)
    p[20:60, 20:50] = 0.9  # a letter stroke...
    p[35:40, 30:35] = 0.2  # ...with a small hole
    p[80:82, 100:102] = 0.95  # a speck
    p[10:30, 80:110] = 0.5  # an unsure patch
    return p


def test_propose_ink_thresholds_drops_specks_fills_holes():
    ink = propose_ink(_prob(), threshold=0.6, min_size=10, max_hole=40)
    assert ink[20:60, 20:50].all()  # the hole (25 px) is filled
    assert not ink[80:82, 100:102].any()  # the 4 px speck is gone
    assert not ink[10:30, 80:110].any()
    raw = propose_ink(_prob(), threshold=0.6, min_size=0, max_hole=0)
    assert raw[80:82, 100:102].all() and not raw[35:40, 30:35].any()
    assert propose_ink(_prob(), threshold=0.4, min_size=0, max_hole=0)[10:30, 80:110].all()
    with pytest.raises(RefineError, match="threshold"):
        propose_ink(_prob(), threshold=2)


def test_propose_ignore_from_the_band_and_disagreement_grown_by_a_margin():
    p = _prob()
    ign = propose_ignore(p, band=(0.3, 0.7), margin=0)
    assert ign[10:30, 80:110].all() and ign.sum() == 20 * 30
    grown = propose_ignore(p, band=(0.3, 0.7), margin=3)
    assert grown[7:33, 80:110].all() and grown[10:30, 77:113].all() and not grown[6, 80] and not grown[7, 77]
    windows = np.stack([p, p, p])
    windows[0, 60:70, 0:10] = 0.0  # the windows disagree there
    windows[1, 60:70, 0:10] = 1.0
    dis = propose_ignore(p, windows=windows, spread=0.2, margin=0)
    assert dis[60:70, 0:10].all() and dis[10:30, 80:110].all()
    mask = np.ones(p.shape, bool)
    mask[:, 90:] = False
    assert not propose_ignore(p, margin=0, mask=mask)[:, 90:].any()
    with pytest.raises(RefineError, match="band"):
        propose_ignore(p, band=(0.7, 0.3))


def test_evaluate_over_kept_pixels():
    label = np.zeros((10, 10), bool)
    label[:, :5] = True
    prob = np.zeros((10, 10), np.float32)
    prob[:, :4] = 0.9  # misses one column
    prob[:, 8:] = 0.9  # two false columns...
    ignore = np.zeros((10, 10), bool)
    ignore[:, 9:] = True  # ...one of them ignored
    m = evaluate(prob, label, ignore)
    assert (m["tp"], m["fp"], m["fn"], m["kept"]) == (40, 10, 10, 90)
    assert m["iou"] == pytest.approx(40 / 60) and m["precision"] == pytest.approx(0.8)


def test_rounds_save_list_compare_restore_and_never_overwrite(tmp_path):
    chunk = tmp_path / "seg_01"
    chunk.mkdir()
    l1 = propose_ink(_prob(), 0.6, 10, 40)
    i1 = propose_ignore(_prob(), margin=0)
    r1 = save_round(chunk, l1, i1, note="first proposal", prediction={"store": "p.zarr"}, author="tester")
    assert r1.number == 1 and r1.folder.name == "round-001"
    np.testing.assert_array_equal(read_mask(chunk / "label.png"), l1)
    np.testing.assert_array_equal(read_mask(chunk / "ignore.png"), i1)
    l2 = l1.copy()
    l2[70:90, 10:30] = True  # painted more ink
    i2 = i1.copy()
    i2[10:30, 80:95] = False  # and cleared part of the ignore
    r2 = save_round(chunk, l2, i2, note="painted")
    assert [r.number for r in list_rounds(chunk)] == [1, 2]
    assert len(mask_history(chunk / "label.png")) == 1  # the round-1 label.png was kept
    record = json.loads((r2.folder / "round.json").read_text())
    assert record["note"] == "painted" and record["stats"]["ink_px"] == int(l2.sum())
    diff, stats = compare_rounds(r1, r2)
    assert stats["ink_added"] == 400 and stats["ink_removed"] == 0
    assert stats["ignore_removed"] == 20 * 15 and (diff == 1).sum() == 400 and (diff == 4).sum() == 300
    assert stats["ink_iou"] == pytest.approx(l1.sum() / l2.sum())
    r3 = restore_round(chunk, 1)
    assert r3.number == 3 and "restored round 1" in r3.record["note"]
    np.testing.assert_array_equal(read_mask(chunk / "label.png"), l1)
    for r, lab in ((r1, l1), (r2, l2)):  # every earlier round is intact
        np.testing.assert_array_equal(r.masks()[0], lab)
    with pytest.raises(RefineError, match="no round 9"):
        restore_round(chunk, 9)


def test_a_save_that_fails_midway_leaves_no_round_and_loses_nothing(tmp_path, monkeypatch):
    import errno

    import napari_phoenix.core.masks as masks

    chunk = tmp_path / "seg_02"
    chunk.mkdir()
    first = save_round(chunk, _prob() > 0.5, _prob() < 0.2)
    calls = {"n": 0}
    real = masks.GrayPngWriter._put

    def full_disk(self, pixels):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, pixels)

    monkeypatch.setattr(masks.GrayPngWriter, "_put", full_disk)
    with pytest.raises(OSError):
        save_round(chunk, _prob() > 0.8, _prob() < 0.1)
    monkeypatch.setattr(masks.GrayPngWriter, "_put", real)
    assert [r.number for r in list_rounds(chunk)] == [1]
    assert not list((chunk / "rounds").glob(".round-*"))
    np.testing.assert_array_equal(read_mask(chunk / "label.png"), _prob() > 0.5)  # untouched
    # a crash that left a partial folder behind: cleaned up, numbering continues
    os.mkdir(chunk / "rounds" / ".round-002.partial")
    second = save_round(chunk, _prob() > 0.8, _prob() < 0.1)
    assert second.number == 2 and first.folder.exists()


def test_compare_predictions():
    from napari_phoenix.core.refine import compare_predictions

    a = _prob()
    b = a.copy()
    b[80:82, 100:102] = 0.1  # the speck is gone
    b[0:10, 0:10] = 0.8  # new ink
    diff, stats = compare_predictions(a, b, threshold=0.6)
    assert diff.dtype == np.float32 and diff[0, 0] == pytest.approx(0.7)
    assert (stats["became_ink"], stats["stopped_being_ink"]) == (100, 4)
    assert stats["ink_iou"] == pytest.approx((stats["ink_a"] - 4) / (stats["ink_a"] + 100))
    with pytest.raises(RefineError, match="different sizes"):
        compare_predictions(a, a[:10])


def test_a_save_killed_midway_leaves_no_round(tmp_path):
    import subprocess
    import sys
    import time

    chunk = tmp_path / "seg_03"
    chunk.mkdir()
    first = save_round(chunk, _prob() > 0.5, _prob() < 0.2, note="kept")
    script = f"""
import time, numpy as np
import napari_phoenix.core.masks as masks
from napari_phoenix.core.refine import save_round
real = masks.GrayPngWriter._put
def slow(self, pixels):
    real(self, pixels)
    open({str(tmp_path / 'started')!r}, 'w').close()
    time.sleep(60)  # killed here, in the middle of writing the round
masks.GrayPngWriter._put = slow
save_round({str(chunk)!r}, np.ones((100, 120), bool), np.zeros((100, 120), bool))
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(600):
            if (tmp_path / "started").exists():
                break
            time.sleep(0.1)
        assert (tmp_path / "started").exists()
    finally:
        proc.kill()
        proc.wait()
    assert [r.number for r in list_rounds(chunk)] == [1]  # no half round
    np.testing.assert_array_equal(first.masks()[0], _prob() > 0.5)
    np.testing.assert_array_equal(read_mask(chunk / "label.png"), _prob() > 0.5)
    assert save_round(chunk, _prob() > 0.8, _prob() < 0.1).number == 2  # the leftover is cleaned up
    assert not list((chunk / "rounds").glob(".round-*"))


def test_compare_rounds_in_bands_matches_a_pixel_by_pixel_reference(monkeypatch):
    """Codes and statistics across band borders, with lazy (dask) and uint8 inputs, and ignore IoU."""
    import dask.array as da

    import napari_phoenix.core.compare as compare

    monkeypatch.setattr(compare, "STRIP", 7)  # many bands, the last one short
    rng = np.random.default_rng(5)
    la, lb, ia, ib = (rng.random((50, 33)) > 0.6 for _ in range(4))
    diff, stats = compare_rounds((da.from_array(la.view(np.uint8) * 255, chunks=16), ia), (lb, ib.astype(np.uint8)))
    want = np.zeros(la.shape, np.uint8)
    want[ib & ~ia], want[ia & ~ib], want[lb & ~la], want[la & ~lb] = 3, 4, 1, 2  # ink changes win
    np.testing.assert_array_equal(diff, want)
    assert (stats["ink_added"], stats["ink_removed"]) == ((lb & ~la).sum(), (la & ~lb).sum())
    assert (stats["ignore_added"], stats["ignore_removed"]) == ((ib & ~ia).sum(), (ia & ~ib).sum())
    assert stats["ink_iou"] == pytest.approx((la & lb).sum() / (la | lb).sum())
    assert stats["ignore_iou"] == pytest.approx((ia & ib).sum() / (ia | ib).sum())
    empty = np.zeros((4, 4), bool)
    assert compare_rounds((empty, empty), (empty, empty))[1]["ignore_iou"] == 1.0
    with pytest.raises(RefineError, match="different sizes"):
        compare_rounds((la, ia), (lb, ib[:10]))


def test_compare_predictions_codes_mask_and_integer_maps(monkeypatch):
    import napari_phoenix.core.compare as compare
    from napari_phoenix.core.refine import PREDICTION_CODES, compare_predictions

    monkeypatch.setattr(compare, "STRIP", 16)
    a = _prob()
    b = a.copy()
    b[80:82, 100:102] = 0.1  # stopped being ink
    b[0:10, 0:10] = 0.8  # became ink
    mask = np.ones(a.shape, bool)
    mask[:5] = False  # half of the new ink is outside the papyrus
    codes, stats = compare_predictions(a, b, threshold=0.6, mask=mask, codes=True)
    assert codes.dtype == np.uint8 and PREDICTION_CODES[1] == "became ink"
    assert (codes == 1).sum() == 50 and (codes == 2).sum() == 4 and not codes[:5].any()
    assert (stats["became_ink"], stats["stopped_being_ink"]) == (50, 4)
    assert stats["mean_abs_change"] == pytest.approx(np.abs(b - a)[mask].mean(), rel=1e-5)
    a8, b8 = (np.round(x * 255).astype(np.uint8) for x in (a, b))  # uint8 maps: 255 is 1.0
    assert compare_predictions(a8, b8, threshold=0.6)[1]["became_ink"] == 100
    before = a.copy()
    compare_predictions(a, b)
    np.testing.assert_array_equal(a, before)  # the inputs are not touched


def test_swipe_composite_moves_only_the_columns_passed_over():
    from napari_phoenix.core.refine import Swipe

    a, b = np.full((30, 40), 1.0, np.float32), np.zeros((30, 40), np.float32)
    a[:, 5] = 0.5
    swipe = Swipe(a, b, column=10, convert=lambda x: (x * 200).astype(np.uint8))
    assert swipe.data.dtype == np.uint8 and swipe.column == 10 and len(swipe.levels) == 1
    assert (swipe.data[:, :10] == (a[:, :10] * 200)).all() and not swipe.data[:, 10:].any()
    assert swipe.move(25) == (slice(0, 30), slice(9, 26))  # right: A covers 10..25 (and a column each side)
    assert (swipe.data[:, :25] == (a[:, :25] * 200).astype(np.uint8)).all() and not swipe.data[:, 25:].any()
    assert swipe.move(3)[1] == slice(2, 26)  # left: B comes back over 3..25
    assert (swipe.data[:, :3] == 200).all() and not swipe.data[:, 3:].any()
    assert swipe.move(3) is None and swipe.move(-50)[1] == slice(0, 4)
    assert swipe.move(10_000)[1] == slice(0, 40) and swipe.column == 40 and (swipe.data == (a * 200)).all()
    with pytest.raises(RefineError, match="one size"):
        Swipe(a, b[:, :20])


def test_swipe_pyramid_and_line_stay_right_at_every_level():
    """Every level is every other row / column of the one above, A | line | B, after any move."""
    from napari_phoenix.core.refine import Swipe

    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 200, (101, 77)).astype(np.uint8) for _ in range(2))
    assert Swipe.levels_for((10_000, 14_000)) == 5 and Swipe.levels_for((256, 384)) == 1
    swipe = Swipe(a, b, 30, levels=4, line=255)
    assert [lv.shape for lv in swipe.levels] == [(101, 77), (51, 39), (26, 20), (13, 10)]
    for column in (30, 31, 60, 2, 0, 77, 40, 41, 13):
        swipe.move(column)
        for k, level in enumerate(swipe.levels):
            step, at = 2**k, -(-column // 2**k)
            want = np.concatenate([a[::step, ::step][:, :at], b[::step, ::step][:, at:]], axis=1)
            want[:, max(at - 1, 0) : at + 1] = 255  # the line, 2 px wide at every level
            np.testing.assert_array_equal(level, want, err_msg=f"level {k}, line at {column}")
