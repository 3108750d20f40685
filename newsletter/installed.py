"""What is installed, found without importing it (an import can cost more than the work it
would save): a package's version, from the `<name>-<version>.dist-info` folder beside it, for
the tables shipped with the package (made from given versions); and a stamp of its files, for
caches on the user's machine (a reinstall or a patched copy changes it, not only an upgrade)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os


def installed_version(package: str) -> str | None:
    """The version of the installed `package` (its import name and distribution name alike,
    as for premailer, cssutils, lxml, babel); None when it is not installed or cannot be told."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    site = os.path.dirname(os.path.dirname(spec.origin))
    prefix = f"{package.lower()}-"
    try:
        names = os.listdir(site)
    except OSError:
        return None
    found = [
        name[len(prefix) : -len(".dist-info")]
        for name in names
        if name.lower().startswith(prefix) and name.endswith(".dist-info")
    ]
    return found[0] if len(found) == 1 else None


def installed_file(package: str, module: str | None = None) -> str | None:
    """The file of `package.module` (or of the package itself), found without importing.

    Only top-level names go to `find_spec`: for "premailer.premailer" it would import the
    package, whose `__init__` imports premailer, cssutils and lxml (0.27 s)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    if module is None:
        return spec.origin
    folder = os.path.dirname(spec.origin)
    for suffix in (*importlib.machinery.EXTENSION_SUFFIXES, ".py"):
        path = os.path.join(folder, module + suffix)
        if os.path.exists(path):
            return path
    return None


def file_stamp(package: str, module: str | None = None) -> str | None:
    """`path:size:mtime` of that file (see `installed_file`); None if it is not installed."""
    path = installed_file(package, module)
    if path is None:
        return None
    info = os.stat(path)
    return f"{path}:{info.st_size}:{info.st_mtime_ns}"
