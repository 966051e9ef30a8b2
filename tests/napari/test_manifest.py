"""The plugin manifest is valid and its contributions import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_npe2_validate_with_imports():
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run(
        [str(npe2), "validate", "napari-phoenix", "--imports"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in (result.stdout + result.stderr).lower()


def test_manifest_is_registered():
    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover()
    manifest = pm.get_manifest("napari-phoenix")
    assert {c.id for c in manifest.contributions.commands} >= {
        "napari-phoenix.get_reader",
        "napari-phoenix.write_mask",
        "napari-phoenix.sample_phantom",
    }
