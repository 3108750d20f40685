"""`subscribers import`, decoding: an import file as text lines, decoded line by line.

Spreadsheets and hand-edited exports mix encodings: one line pasted from Excel in
Windows-1252 inside a UTF-8 file. Decoding the whole file one way would garble every
other line ("Jörg" as "JÃ¶rg", a new subscriber `jÃ¶rg@...`), so each line is UTF-8
where it is valid and Windows-1252 only where it is not, and such lines are reported by
number. A line that is neither is marked, so the reader rejects its row and goes on.

Whole blocks are decoded at once while they are valid UTF-8 (nearly always); only a block
that is not is split into lines first. Lines end at \\n, \\r or \\r\\n, as for
`open(newline="")`, which is what the csv module wants.
"""

from __future__ import annotations

import codecs
import io
import itertools
from collections.abc import Iterator
from typing import IO

BLOCK_BYTES = 1 << 20

#: Line numbers of lines read as Windows-1252 that are kept for the report.
REPORT_LINES = 1000

FALLBACK = "cp1252"


class LineDecoder:
    """Iterate over the decoded lines of a binary file; see the module docstring.

    `bytes_read` follows the file for progress; `fallback_lines` (the first
    REPORT_LINES) and `fallback_count` tell which lines were read as Windows-1252;
    `last_undecodable` is true while the line just returned was neither encoding (it
    is returned decoded with replacement characters, to be rejected by the caller).
    """

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.bytes_read = 0
        self.line = 0
        self.fallback_lines: list[int] = []
        self.fallback_count = 0
        #: Some line used UTF-8 beyond ASCII: the file is UTF-8, not Windows-1252.
        self.utf8_seen = False
        self.bom = False
        self.last_undecodable = False
        # Lists of lines chained in C: no Python call per line on the fast path.
        self._lines = itertools.chain.from_iterable(self._decode())

    def __iter__(self) -> Iterator[str]:
        return self._lines

    def encoding(self) -> str:
        """What to call the file's encoding in the summary."""
        if self.fallback_count and not self.utf8_seen:
            return FALLBACK  # every non-ASCII line was Windows-1252: an Excel export
        return "utf-8-sig" if self.bom else "utf-8"

    def _blocks(self) -> Iterator[bytes]:
        """Blocks of whole lines (the last may end without a line break)."""
        rest = b""
        while True:
            data = self.raw.read(BLOCK_BYTES)
            self.bytes_read += len(data)
            if not data:
                if rest:
                    yield rest
                return
            data = rest + data
            if self.bytes_read == len(data) and data.startswith(codecs.BOM_UTF8):
                self.bom = True
                data = data[len(codecs.BOM_UTF8) :]
            # Cut after the last line break; a \r at the very end may be half of a \r\n.
            cut = max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)) + 1
            if cut == 0:
                rest = data  # one line longer than a block: read on
                continue
            rest = data[cut:]
            yield data[:cut]

    def _decode(self) -> Iterator[list[str]]:
        for block in self._blocks():
            try:
                text = block.decode("utf-8")
            except UnicodeDecodeError:
                yield from self._decode_lines(block)
                continue
            if not self.utf8_seen and not block.isascii():
                self.utf8_seen = True
            lines = io.StringIO(text, newline="").readlines()
            self.line += len(lines)
            yield lines

    def _decode_lines(self, block: bytes) -> Iterator[list[str]]:
        """One line at a time, so `last_undecodable` is true exactly while its line is
        the one being read."""
        for raw in block.splitlines(keepends=True):
            self.line += 1
            try:
                text = raw.decode("utf-8")
                if not raw.isascii():
                    self.utf8_seen = True
            except UnicodeDecodeError:
                try:
                    text = raw.decode(FALLBACK)
                except UnicodeDecodeError:
                    self.last_undecodable = True
                    yield [raw.decode(FALLBACK, errors="replace")]
                    self.last_undecodable = False
                    continue
                self.fallback_count += 1
                if len(self.fallback_lines) < REPORT_LINES:
                    self.fallback_lines.append(self.line)
            yield [text]
