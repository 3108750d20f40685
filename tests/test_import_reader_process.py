"""Issue 27.1: the import's reader process is a lean interpreter of its own, not a fork.

A forked reader carried the importing process's memory (SQLAlchemy, the CLI's modules)
a second time: at a million rows the two summed 166 MB RSS. These tests run real
processes; a failure in the reader (here a real EFBIG on the reject file) must reach the
importer as the same one-line error, with what was written.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from newsletter.errors import StoreError
from newsletter.store.engine import open_engine
from newsletter.store.importer import PARALLEL_BYTES, import_file
from newsletter.store.importer.process import can_fork
from newsletter.store.subscribers import count_subscribers

from .conftest import REPO

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not can_fork(), reason="uses /proc and pass_fds"
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_the_reader_process_loads_neither_sqlalchemy_nor_the_cli() -> None:
    probe = (
        "import sys, newsletter.store.importer.reader\n"
        "print(sorted(m for m in ('sqlalchemy', 'click', 'newsletter.cli', "
        "'newsletter.store.importer.run') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def _rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    if "VmRSS:" not in status:
        return 0.0
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


@pytest.mark.slow
def test_a_big_import_s_reader_process_stays_small(make_project, tmp_path: Path) -> None:
    """The CLI's import of a file big enough for a reader process: the reader's memory is
    its own work, far below the importing process's (a fork started at the importer's
    size), and the import's result is the same."""
    project = make_project()
    source = tmp_path / "big.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        handle.write("email,first name,last name,tags\n")
        for i in range(150_000):
            handle.write(f"p{i}.leserin@example.com,Jörg{i},Müller-Lüdenscheidt,leser\n")
    assert source.stat().st_size >= PARALLEL_BYTES
    importing = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--project", str(project)]
        + ["subscribers", "import", str(source), "--quiet"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reader_sizes: list[float] = []  # MB, sampled while the reader runs
    importer_sizes: list[float] = []
    while importing.poll() is None:
        children = Path(f"/proc/{importing.pid}/task/{importing.pid}/children")
        try:
            pids = [int(p) for p in children.read_text().split()]
        except OSError:
            pids = []
        for pid in pids:
            rss = _rss_mb(pid)
            if rss:
                reader_sizes.append(rss)
                importer_sizes.append(_rss_mb(importing.pid))
        time.sleep(0.01)
    out, err = importing.communicate()
    assert importing.returncode == 0, err
    assert "150,000 new" in out or "150000 new" in out.replace(",", ""), out
    assert len(reader_sizes) > 10, "no reader process was seen"
    # The importer alone holds SQLAlchemy and the CLI (over 50 MB); a forked reader
    # started with all of it. (The median: a sample may catch the child before its exec.)
    # The reader is about 42 MB, up to 47 MB while it waits for a busy writer with a
    # chunk in hand (the whole suite on two cores): a fork would be the importer's 77 MB.
    reader, importer = statistics.median(reader_sizes), statistics.median(importer_sizes)
    assert reader < 50 and reader < importer / 1.5, (reader, importer)


@pytest.mark.slow
def test_an_error_in_the_reader_process_stops_the_import_with_what_was_written(
    database_url: str, tmp_path: Path
) -> None:
    """The reader writes the reject file; the disk refusing it (EFBIG, past the file size
    limit the reader inherited) ends the import with one line saying what was written."""
    lines = ["email,name"]
    lines += [f"p{i}@example.com,P{i}" for i in range(8)]  # lines 2-9: two chunks of 4
    lines += [f"kaputt{i},{'x' * 100_000}" for i in range(40)]  # 4 MB of rejects from line 10
    source = tmp_path / "x.csv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    engine = open_engine(database_url)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, limit[1]))
    try:
        with pytest.raises(StoreError) as caught:
            import_file(
                engine, source, chunk_rows=4, parallel=True, rejects_path=tmp_path / "r.csv"
            )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
    message = str(caught.value)
    assert "\n" not in message
    assert "File too large" in message
    assert "8 rows written (lines 2-9)" in message and "stopped at line 10" in message
    assert "run the same import again" in message
    assert count_subscribers(engine) == 8


def test_a_json_export_asked_to_use_the_reader_process_is_read_here(
    database_url: str, tmp_path: Path
) -> None:
    """JSON has no lines to stream; the reader process reads CSV only, so a JSON export is
    read in the importing process even when a reader process is asked for."""
    source = tmp_path / "export.json"
    source.write_text(
        '[{"email": "jörg@example.de", "first_name": "Jörg", "tags": ["leser"]},'
        ' {"email": "anna@example.de", "status": "unsubscribed"}]',
        encoding="utf-8",
    )
    engine = open_engine(database_url)
    result = import_file(engine, source, parallel=True)
    assert (result.new, result.rejected) == (2, 0)
    assert count_subscribers(engine) == 2


def test_the_reader_process_appends_to_a_bom_reject_file_as_one_process_would(
    database_url: str, tmp_path: Path
) -> None:
    """Excel's CSV UTF-8 (with a BOM): the reader process appends its rejects after the
    header the importer wrote, with no second BOM, the same bytes as without it."""
    lines = ["E-Mail;Vorname;Stadt"]
    for i in range(12):
        lines.append(f"p{i}@example.de;Jörg{i};Köln")
    lines += ["kaputt;Änne;„Zitat“", "auch-kaputt@;Ü;Düsseldorf"]
    source = tmp_path / "excel.csv"
    source.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n").encode("utf-8"))
    here, there = tmp_path / "r-here.csv", tmp_path / "r-reader.csv"
    serial = import_file(
        open_engine(f"sqlite:///{tmp_path / 'serial.db'}"),
        source,
        chunk_rows=5,
        parallel=False,
        rejects_path=here,
    )
    engine = open_engine(database_url)
    parallel = import_file(engine, source, chunk_rows=5, parallel=True, rejects_path=there)
    assert (parallel.new, parallel.rejected) == (serial.new, serial.rejected) == (12, 2)
    assert there.read_bytes() == here.read_bytes()
    assert there.read_bytes().count(b"\xef\xbb\xbf") == 1
    assert "„Zitat“" in there.read_text(encoding="utf-8-sig")
