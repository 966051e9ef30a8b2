"""The wheel carries the manifest, and napari finds it in an installed wheel."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("napari_phoenix-*.whl")
    return whl


def test_wheel_contains_manifest_package_and_entry_point(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        manifest = zf.read("napari_phoenix/napari.yaml").decode()
        (ep_name,) = [n for n in names if n.endswith("entry_points.txt")]
        entry_points = zf.read(ep_name).decode()
    assert "napari_phoenix/core/stack.py" in names
    assert manifest == (ROOT / "napari.yaml").read_text()  # the real file, not a symlink
    assert "[napari.manifest]" in entry_points and "napari_phoenix:napari.yaml" in entry_points
    assert "phoenix = napari_phoenix.cli:main" in entry_points
    assert not any(n.startswith("tests/") for n in names)


@pytest.mark.slow
def test_npe2_validates_the_installed_wheel_in_a_fresh_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )
    # the wheel is pip-installed into the fresh venv; its dependencies come from
    # the development venv through a plain path entry, which does not process
    # that venv's .pth files, so the editable napari-phoenix stays invisible
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True,
    )
    dev_site = sysconfig.get_paths()["purelib"]
    (site / "zz_dev_deps.pth").write_text(dev_site + "\n")
    check = subprocess.run(
        [str(py), "-c", "import napari_phoenix, sys; print(napari_phoenix.__file__)"],
        capture_output=True, text=True, check=True,
    )
    assert check.stdout.strip().startswith(str(site))
    result = subprocess.run(
        [str(py), "-m", "npe2", "validate", "napari-phoenix", "--imports"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
