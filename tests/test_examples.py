"""The examples run as documented (headless)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refinement_round_runs_headless(tmp_path):
    summary = _load("refinement_round").main(["--out", str(tmp_path), "--steps", "1"])
    assert summary["rounds"] == [1, 2]
    assert summary["prediction_change"] > 0  # the fine-tuned model predicts something else
    assert (tmp_path / "segment" / "rounds" / "round-001" / "round.json").exists()
    assert (tmp_path / "segment" / ".history").is_dir()  # round 1's label.png was kept when round 2 saved
    assert summary["rounds_compared"]["ink_a"] > 0
