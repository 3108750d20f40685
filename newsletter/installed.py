"""Installed packages' versions, found without importing them (an import can cost more than
the work it would save): from the `<name>-<version>.dist-info` folder beside the package."""

from __future__ import annotations

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
