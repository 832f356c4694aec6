"""The package mapping works outside the editable install: build the wheel, install it into
a fresh venv, import every subpackage and run the console command."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ["riversync", "riversync.protocol", "riversync.engine", "riversync.hub", "riversync.node"]


@pytest.mark.slow
def test_wheel_installs_and_imports_every_subpackage(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "site"))
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        check=True,
    )
    (wheel,) = dist.glob("riversync-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True)
    # -S skips .pth files, so the editable install's import hook cannot answer for the wheel;
    # third-party dependencies still come from this venv's site-packages.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    code = (
        f"import sys; sys.path[:0] = {[str(target), *deps]!r}; import importlib; "
        f"mods = [importlib.import_module(m) for m in {SUBPACKAGES!r}]; import riversync.cli; "
        f"assert all(m.__file__.startswith({str(target)!r}) for m in mods), [m.__file__ for m in mods]; print('ok')"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "ok"
    for m in SUBPACKAGES:
        mod_dir = target / Path(*m.split("."))
        assert (mod_dir / "__init__.py").is_file(), m
