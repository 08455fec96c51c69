"""Whether the window can start on this machine: the system libraries Qt's X11 (xcb) platform plugin needs.

Qt loads its platform plugin only when the application object is created, and when a library the plugin links
against is missing it aborts the process with "Could not load the Qt platform plugin", naming neither the library
nor the package that provides it. So before the window starts on X11, and at the end of set-up, this module runs
``ldd`` on the plugin (``PySide6/Qt/plugins/platforms/libqxcb.so``) and on Qt's xcb library, and turns each
"not found" into one line naming the library and the Debian package to install.

Qt-free on purpose: it must answer exactly when importing Qt's GUI would fail. PySide6 is located with
``importlib.util.find_spec`` without importing it. Run as ``python -m ui.system_check`` (set-up does) it prints
those lines and exits 1 when anything is missing, 0 otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# The shared library → the Debian (and Ubuntu) package that ships it, for what the xcb plugin and Qt's GUI
# libraries link against beyond the C runtime (read off `ldd` of libqxcb.so, libQt6XcbQpa, libQt6Gui and the
# xcb GL integrations of PySide6 6.x).
DEBIAN_PACKAGES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libGLX.so.0": "libglx0",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
}


@dataclass(frozen=True)
class MissingLibrary:
    library: str
    needed_by: str

    @property
    def package(self) -> str | None:
        return DEBIAN_PACKAGES.get(self.library)

    def line(self) -> str:
        where = f"needed by {self.needed_by}"
        if self.package:
            return (f"missing system library {self.library} ({where}): install the Debian package {self.package} "
                    f"(sudo apt-get install {self.package})")
        return f"missing system library {self.library} ({where}): install the package of your system that provides it"


def qt_folder() -> Path | None:
    """PySide6's ``Qt`` folder, found without importing PySide6; None when PySide6 is not installed."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "Qt"


def xcb_binaries(qt: Path) -> list[Path]:
    """The files whose links decide whether the xcb platform can load."""
    candidates = [qt / "plugins" / "platforms" / "libqxcb.so", *sorted((qt / "lib").glob("libQt6XcbQpa.so*"))[:1],
                  *sorted((qt / "lib").glob("libQt6Gui.so*"))[:1]]
    return [p for p in candidates if p.is_file()]


def missing_libraries(binaries: list[Path] | None = None) -> list[MissingLibrary]:
    """Every library ``ldd`` reports as "not found" for the xcb plugin and Qt's xcb and GUI libraries (each once).
    Empty off Linux, or when ``ldd`` or PySide6 is not there (nothing to say then)."""
    if not sys.platform.startswith("linux") or shutil.which("ldd") is None:
        return []
    if binaries is None:
        qt = qt_folder()
        if qt is None:
            return []
        binaries = xcb_binaries(qt)
    found: dict[str, MissingLibrary] = {}
    for binary in binaries:
        try:
            out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30,
                                 env={**os.environ, "LC_ALL": "C"}).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for line in out.splitlines():
            name, _, rest = line.strip().partition(" => ")
            if rest.strip() == "not found" and name not in found:
                found[name] = MissingLibrary(name, binary.name)
    return list(found.values())


def report(missing: list[MissingLibrary]) -> str:
    """The lines to show: one per missing library, then one command installing every package named."""
    lines = [m.line() for m in missing]
    packages = sorted({m.package for m in missing if m.package})
    if len(packages) > 1:
        lines.append("all at once: sudo apt-get install " + " ".join(packages))
    return "\n".join(lines)


def main() -> int:
    missing = missing_libraries()
    if missing:
        print("The window cannot start on X11 (Qt's xcb platform):\n" + report(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
