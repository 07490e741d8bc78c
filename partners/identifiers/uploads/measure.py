"""What an upload body holds, measured while it arrives (see :func:`spool.spool`): how far a
gzip body inflates, and how many of its lines hold no record. Nothing here keeps the body."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from hub.core.errors import BadRequest, PayloadTooLarge
from partners.identifiers.uploads.models import CSV
from partners.identifiers.uploads.rows import MAX_LINE_BYTES

GZIP_WBITS = 31  # zlib's "gzip container" mode
INFLATE_STEP = 1024 * 1024  # the most a single inflate call produces (memory stays flat)
RATIO_CHECKED_FROM = 8 * 1024 * 1024  # a small body may compress as well as it likes


@dataclass(frozen=True)
class InflateLimits:
    """How far a gzip body may inflate: in bytes, and as a multiple of its compressed size."""

    max_bytes: int
    max_ratio: int


class InflatedSizeGauge:
    """Inflates a gzip body as it arrives, only to measure it: the output is thrown away.

    A gzip bomb (a few hundred KB of gzip that inflate to gigabytes of blank lines) would
    otherwise be accepted, spooled small and then keep the upload processor busy for minutes;
    here it is refused with 413 once its first megabytes came out. Several gzip members (as
    ``cat a.gz b.gz`` makes) and zero padding after them are read as the processor reads them.
    """

    def __init__(self, limits: InflateLimits, lines: BlankLineCounter | None = None) -> None:
        self.limits = limits
        self.lines = lines
        self.inflated = 0
        self._inflater: Any = None  # None between members

    def feed(self, chunk: bytes, compressed_so_far: int) -> None:
        data = chunk
        while data:
            if self._inflater is None:
                data = data.lstrip(b"\x00")
                if not data:
                    return
                self._inflater = zlib.decompressobj(GZIP_WBITS)
            try:
                out = self._inflater.decompress(data, INFLATE_STEP)
            except zlib.error as exc:
                raise BadRequest(
                    f"The body is declared 'Content-Encoding: gzip' but is not a valid gzip "
                    f"stream ({exc}).",
                    fix="Compress the file with gzip, or send it without that header.",
                ) from None
            self.inflated += len(out)
            self._check(compressed_so_far)
            if self.lines is not None:
                self.lines.feed(out)
            if self._inflater.eof:
                data = self._inflater.unused_data
                self._inflater = None
            else:
                data = self._inflater.unconsumed_tail

    def finish(self) -> None:
        """The body has all arrived: it must not end inside a gzip member."""
        if self._inflater is not None:
            raise BadRequest(
                "The gzip body ends before its end marker (the file was cut short).",
                fix="Send the whole file again.",
            )

    def _check(self, compressed_so_far: int) -> None:
        limits = self.limits
        if self.inflated > limits.max_bytes:
            raise PayloadTooLarge(
                f"The gzip body inflates to more than {limits.max_bytes:,} bytes.",
                fix="Split the file into smaller uploads.",
            )
        if (
            self.inflated > RATIO_CHECKED_FROM
            and self.inflated > limits.max_ratio * compressed_so_far
        ):
            raise PayloadTooLarge(
                f"The gzip body inflates more than {limits.max_ratio}-fold "
                f"({compressed_so_far:,} bytes gave {self.inflated:,} bytes so far): that is a "
                "compression bomb, not a file of records.",
                fix="Send the records themselves (blank or repeated lines are not records), "
                "or the file uncompressed.",
            )


_NDJSON_BLANK = b" \t\r\x0b\x0c"  # what bytes.strip() removes, newline aside
# Every byte but the line end becomes "a": a line holding anything ends in "a\n".
_MARK = bytes(b if b == ord("\n") else ord("a") for b in range(256))
_BLANK_AS_SPACE = bytes.maketrans(_NDJSON_BLANK, b" " * len(_NDJSON_BLANK))
_LONG_BLANK_RUN = b" " * MAX_LINE_BYTES


class BlankLineCounter:
    """Counts the lines of a body that hold no record, which the row reader skips, so that
    the upload reports them (``blank_lines``) instead of skipping them silently: in NDJSON a
    line of whitespace shorter than a refused over-long line, in CSV an empty line (a quoted
    value spanning lines is not told apart).

    Linear and in constant memory whatever the chunks, and in C for the whole lines of a
    chunk (a gzip bomb of blank lines is counted at the speed it inflates); of the line in
    progress only its length and whether it could still be blank are kept."""

    def __init__(self, fmt: str) -> None:
        self.blank = 0
        self._csv = fmt == CSV
        self._blank_bytes = b"\r" if self._csv else _NDJSON_BLANK
        self._max_length = 2 if self._csv else MAX_LINE_BYTES  # a blank line is shorter
        self._length = 0  # of the line in progress
        self._only_blank_bytes = True  # so far, in the line in progress

    def feed(self, data: bytes) -> None:
        first = data.find(b"\n")
        if first < 0:
            self._extend(data)
            return
        self._extend(data[:first])
        if self._line_is_blank():
            self.blank += 1
        last = data.rfind(b"\n")
        if last > first:
            self.blank += self._blank_lines_in(data[first + 1 : last + 1])
        self._length, self._only_blank_bytes = 0, True
        self._extend(data[last + 1 :])

    def finish(self) -> int:
        """The count, the last line (one without a line end) included."""
        if self._length and self._line_is_blank():
            self.blank += 1
        self._length, self._only_blank_bytes = 0, True
        return self.blank

    def _blank_lines_in(self, lines: bytes) -> int:
        """Blank lines among whole lines (each ends with its line end)."""
        if self._csv:
            marked = lines.replace(b"\r\n", b"\n").translate(_MARK)
            return marked.count(b"\n") - marked.count(b"a\n")
        marked = lines.translate(_MARK, _NDJSON_BLANK)
        blank = marked.count(b"\n") - marked.count(b"a\n")
        if blank and _LONG_BLANK_RUN in lines.translate(_BLANK_AS_SPACE):
            # Rare: a line of whitespace too long to be blank (the reader refuses it).
            blank -= sum(
                1
                for line in lines.split(b"\n")
                if len(line) >= MAX_LINE_BYTES and not line.translate(None, _NDJSON_BLANK)
            )
        return blank

    def _extend(self, piece: bytes) -> None:
        self._length += len(piece)
        if self._only_blank_bytes and piece.translate(None, self._blank_bytes):
            self._only_blank_bytes = False

    def _line_is_blank(self) -> bool:
        return self._only_blank_bytes and self._length < self._max_length
