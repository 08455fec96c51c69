"""The real window on a real X server (Qt's xcb platform), not offscreen: offscreen hides a missing system library.

Under the test command an Xvfb display is already there (``DISPLAY``); run alone, the fixture starts its own Xvfb.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ui.conftest import build_small_project

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 (xcb) is the Linux window system")


@pytest.fixture(scope="module")
def x_display():
    """A ``DISPLAY`` to open windows on: the test command's Xvfb, or one started here."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    assert xvfb, "Xvfb is not installed: run scripts/setup.sh (it installs the package xvfb)"
    read, write = os.pipe()
    proc = subprocess.Popen([xvfb, "-displayfd", str(write), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    assert number, "Xvfb did not start"
    try:
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _gui(project: Path, display: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
    env.pop("WAYLAND_DISPLAY", None)
    return subprocess.run([sys.executable, "-m", "workbench.cli", "gui", str(project), *extra], env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_window_starts_on_xcb(tmp_path: Path, x_display: str) -> None:
    project = build_small_project(tmp_path / "p.wbp")
    done = _gui(project, x_display, "--smoke-test")
    assert done.returncode == 0, done.stderr
    assert "shown on the xcb platform" in done.stdout


def test_the_smoke_test_fails_when_qt_runs_elsewhere_than_asked(tmp_path: Path, x_display: str) -> None:
    # Asking for a platform Qt cannot give must fail the smoke test, not pass on whatever Qt fell back to.
    project = build_small_project(tmp_path / "p.wbp")
    env = {**os.environ, "DISPLAY": x_display, "QT_QPA_PLATFORM": "nosuchplatform;xcb"}
    done = subprocess.run([sys.executable, "-m", "workbench.cli", "gui", str(project), "--smoke-test"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "runs on the 'xcb' platform, not on 'nosuchplatform'" in done.stderr


def test_a_missing_library_is_named_with_its_package(tmp_path: Path) -> None:
    from ui.system_check import MissingLibrary, missing_libraries, report

    # A real binary whose dependency is not on this machine: link a tiny library against one, then delete it.
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler (the machine's gcc) to build a library with a missing dependency"
    soname = "libwb-absent-for-test.so.1"
    dep = tmp_path / soname
    subprocess.run([cc, "-shared", f"-Wl,-soname,{soname}", "-o", str(dep), "-x", "c", "-"],
                   input="int wb_dep(void){return 1;}", text=True, check=True)
    binary = tmp_path / "libqxcb.so"
    subprocess.run([cc, "-shared", "-o", str(binary), "-x", "c", "-", "-x", "none", "-Wl,--no-as-needed", str(dep)],
                   input="int wb(void){return 2;}", text=True, check=True)
    dep.unlink()
    missing = missing_libraries([binary])
    assert [m.library for m in missing] == [soname]
    assert soname in report(missing) and "libqxcb.so" in report(missing)
    # The libraries a fresh Debian lacks are named with the package that ships them.
    text = report([MissingLibrary("libxcb-icccm.so.4", "libqxcb.so"), MissingLibrary("libxcb-keysyms.so.1", "libqxcb.so")])
    assert "install the Debian package libxcb-icccm4" in text
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1" in text
