"""The pure core stays free of Qt / napari, and importing the plugin stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken" in result.stdout


def test_importing_the_package_does_not_load_heavy_modules():
    code = (
        "import sys, napari_phoenix; "
        "heavy = [m for m in ('torch', 'dask', 'napari', 'transformers', 'zarr', 'qtpy') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_core_modules_import_without_qt():
    code = (
        "import sys, pkgutil, importlib, napari_phoenix.core as c\n"
        "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('napari_phoenix.core.' + m.name)\n"
        "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'magicgui', 'vispy') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_importing_the_package_turns_on_torch_huge_pages_unless_told_otherwise():
    import os

    code = "import os, napari_phoenix; print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "1"
    kept = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**env, "THP_MEM_ALLOC_ENABLE": "0"})  # fmt: skip
    assert kept.stdout.strip() == "0"
