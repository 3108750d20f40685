"""Building the package compiles the catalogues: the wheel carries each language's .mo (and no
.po to go stale), and an editable install leaves the .mo beside its .po."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from newsletter import i18n
from tests.conftest import REPO

pytest.importorskip("hatchling")

LANGUAGES = [po.parent.parent.name for po in i18n.LOCALE_DIR.glob("*/LC_MESSAGES/*.po")]


def _source_copy(tmp_path: Path) -> Path:
    """What a fresh checkout has (no compiled catalogues), in a folder of its own."""
    copy = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.mo")
    for folder in ("newsletter", "templates"):
        shutil.copytree(REPO / folder, copy / folder, ignore=ignore)
    for name in ("pyproject.toml", "hatch_build.py", "README.md", ".gitignore"):
        shutil.copy(REPO / name, copy / name)
    return copy


def _build(copy: Path, hook: str) -> Path:
    done = subprocess.run(
        [sys.executable, "-c", f"import hatchling.build as b; print(b.{hook}('dist'))"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return copy / "dist" / done.stdout.strip()


@pytest.mark.slow
def test_the_wheel_carries_each_compiled_catalogue(tmp_path: Path) -> None:
    copy = _source_copy(tmp_path)
    wheel = _build(copy, "build_wheel")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert not [n for n in names if n.endswith(".po")]
        for language in LANGUAGES:
            mo = f"newsletter/locale/{language}/LC_MESSAGES/newsletter.mo"
            po = REPO / f"newsletter/locale/{language}/LC_MESSAGES/newsletter.po"
            assert archive.read(mo) == i18n.compile_catalogue(po), language


@pytest.mark.slow
def test_an_editable_install_compiles_beside_the_po(tmp_path: Path) -> None:
    pytest.importorskip("editables")  # what hatchling's editable wheels need
    copy = _source_copy(tmp_path)
    _build(copy, "build_editable")
    for language in LANGUAGES:
        po = copy / f"newsletter/locale/{language}/LC_MESSAGES/newsletter.po"
        assert po.with_suffix(".mo").read_bytes() == i18n.compile_catalogue(po), language
