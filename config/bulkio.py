"""Streaming CSV / JSON Lines I/O for the bulk commands.

Readers yield one record at a time with its line number, so memory stays flat
whatever the file size. A line that cannot be read (bad UTF-8, broken CSV
quoting, invalid JSON) becomes a rejected record; a file that cannot be read
at all (no usable header, NUL bytes, a binary) raises BulkFormatError with a
one-line message naming the line. ImportCommand is the shared shell of import_products
and import_users: batching, one transaction per batch, rejections, --strict,
--dry-run, --errors, progress bar and summary line.
"""

from __future__ import annotations

import csv
import gc
import itertools
import json
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import IO, Any, ClassVar, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection, connections, transaction

FORMATS = ("csv", "jsonl")
# Keys remembered to name the line a repeated key supersedes (about 15 MB);
# the memo starts over when full, so repeats further apart go unnamed.
KEY_MEMO_SIZE = 100_000
BOM = b"\xef\xbb\xbf"
# A "line" longer than this is almost certainly a binary file without newlines.
MAX_LINE_BYTES = 16 * 1024 * 1024
DEFAULT_BATCH_SIZE = 5000


class BulkFormatError(Exception):
    """The input cannot be read as the expected format (one-line message)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One input row: its first line number and its raw values by column."""

    line: int
    data: dict[str, Any]


@dataclass(slots=True)
class Rejection:
    """A row refused by validation, with the reasons by field."""

    line: int
    data: Mapping[str, Any]
    errors: dict[str, list[str]]

    def message(self) -> str:
        """Return 'line N: field: reason; ...' for standard error."""
        reasons = "; ".join(
            f"{name}: {' '.join(str(m) for m in messages)}"
            if name not in ("", "_row", "non_field_errors")
            else " ".join(str(m) for m in messages)
            for name, messages in self.errors.items()
        )
        return f"line {self.line}: {reasons}"


@dataclass(slots=True)
class UpsertResult:
    """How many rows an upsert inserted, changed, or found identical."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def __iadd__(self, other: UpsertResult) -> UpsertResult:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        return self


def detect_format(path: str, fmt: str | None) -> str:
    """Return 'csv' or 'jsonl' from *fmt* or the file extension."""
    if fmt:
        return fmt
    name = path.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise CommandError(
        f"Cannot tell the format of {path!r} from its extension; pass --format."
    )


class LineReader:
    """Iterate decoded text lines of a byte stream, counting lines and bytes.

    A line that is not valid UTF-8 is decoded with surrogate escapes (written
    back byte for byte by RejectWriter) and its number and reason are kept in
    ``bad`` until the record reader rejects it. With *hold*, the lines handed
    out are also appended to ``held``, which the reader clears after each
    record.
    """

    def __init__(self, stream: IO[bytes], *, hold: bool = False) -> None:
        self.stream = stream
        self.line = 0
        self.bytes_read = 0
        self.bad: dict[int, str] = {}
        self.held: list[str] | deque[str] = [] if hold else deque(maxlen=1)

    def __iter__(self) -> Iterator[str]:
        readline = self.stream.readline
        hold = self.held.append
        while True:
            raw = readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            self.line += 1
            self.bytes_read += len(raw)
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise BulkFormatError(
                    f"line {self.line}: longer than {MAX_LINE_BYTES // 2**20} MiB;"
                    " is this a binary file?"
                )
            if self.line == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            if b"\x00" in raw:
                raise BulkFormatError(
                    f"line {self.line}: contains a NUL byte; is this a binary file?"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.bad[self.line] = (
                    f"not valid UTF-8 text"
                    f" (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                )
                text = raw.decode("utf-8", "surrogateescape")
            hold(text)
            yield text


class RecordReader:
    """Read CSV or JSON Lines records with the columns a command accepts.

    A line that cannot be read (bad UTF-8, broken CSV quoting, invalid JSON)
    becomes a record whose ``_row`` gives the reason, so that the command
    rejects that line and reads on. Unknown columns are ignored with one
    notice in ``notices``, or refused when *strict*.
    """

    def __init__(
        self,
        stream: IO[bytes],
        *,
        fmt: str,
        columns: Sequence[str],
        required: Sequence[str],
        strict: bool = False,
    ) -> None:
        self.lines = LineReader(stream, hold=fmt == "csv")
        self.fmt = fmt
        self.columns = tuple(columns)
        self.required = tuple(required)
        self.strict = strict
        self.notices: list[str] = []

    @property
    def bytes_read(self) -> int:
        return self.lines.bytes_read

    @property
    def line(self) -> int:
        return self.lines.line

    def __iter__(self) -> Iterator[Record]:
        if self.fmt == "csv":
            return self._csv()
        return self._jsonl()

    def _unknown(self, unknown: Sequence[str], line: int, what: str) -> str:
        return (
            f"line {line}: unknown {what}(s) {', '.join(map(repr, unknown))};"
            f" expected {', '.join(self.columns)}"
        )

    def _check_columns(self, names: Sequence[str], line: int) -> None:
        unknown = [n for n in names if n not in self.columns and not n.startswith("_")]
        if unknown:
            message = self._unknown(unknown, line, "column")
            if self.strict:
                raise BulkFormatError(message)
            self.notices.append(f"{message}; ignored")
        missing = [n for n in self.required if n not in names]
        if missing:
            raise BulkFormatError(
                f"line {line}: missing column(s) {', '.join(missing)};"
                f" expected {', '.join(self.columns)}"
            )

    @staticmethod
    def _replayed(replay: list[str], held: list[str]) -> Iterator[str]:
        """Yield *replay*, keeping in *held* the lines handed out."""
        for text in replay:
            held.append(text)
            yield text

    def _csv(self) -> Iterator[Record]:
        # Long descriptions are legitimate; the line cap guards against binaries.
        csv.field_size_limit(MAX_LINE_BYTES)
        source = iter(self.lines)
        bad = self.lines.bad
        # The lines of the record being read: a record that turns out broken
        # gives back the lines it swallowed after its first (an unterminated
        # quote), to be read again.
        held = self.lines.held
        assert isinstance(held, list)  # noqa: S101 - for the type checker
        reader = csv.reader(source, strict=True)
        base = 0  # the number of the line before the reader's first one
        header: list[str] | None = None
        kept: list[str] = []
        known: frozenset[str] = frozenset()
        skipped = False
        while True:
            start = base + reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                end = base + reader.line_num
                if header is None:
                    raise BulkFormatError(f"line {end}: bad CSV: {exc}") from None
                yield self._broken(start, end, held, exc, header)
                replay = held[1:]
                held.clear()
                lines = itertools.chain(self._replayed(replay, held), source)
                reader = csv.reader(lines, strict=True)
                base = start
                continue
            held.clear()
            if bad:
                reason = self._undecodable(start, base + reader.line_num)
                if reason and header is None:
                    raise BulkFormatError(f"line {start}: {reason}")
                if reason:
                    yield Record(
                        start,
                        {**dict(zip(header, values, strict=False)), "_row": reason},
                    )
                    continue
            if not values or values == [""]:
                continue
            if header is None:
                header = [v.strip().lower() for v in values]
                dupes = sorted({n for n in header if header.count(n) > 1})
                if dupes:
                    raise BulkFormatError(
                        f"line {start}: duplicate column(s) {', '.join(dupes)}"
                    )
                self._check_columns(header, start)
                kept = [n for n in header if n in self.columns]
                known = frozenset(kept)
                skipped = len(kept) < len(header)
                continue
            if len(values) != len(header):
                # Kept with the reason, so --errors still holds what was there.
                partial = dict(zip(header, values, strict=False))
                reason = f"expected {len(header)} fields, found {len(values)}"
                yield Record(start, {**partial, "_row": reason})
                continue
            if skipped:
                yield Record(
                    start,
                    {
                        name: value
                        for name, value in zip(header, values, strict=True)
                        if name in known
                    },
                )
            else:
                yield Record(start, dict(zip(kept, values, strict=True)))
        if header is None:
            raise BulkFormatError("line 1: empty file; expected a CSV header line")

    def _undecodable(self, start: int, end: int) -> str | None:
        """Return (and forget) why a line of *start*..*end* could not be decoded."""
        reasons = [
            reason if number == start else f"{reason} on line {number}"
            for number in range(start, end + 1)
            if (reason := self.lines.bad.pop(number, None))
        ]
        return "; ".join(reasons) or None

    def _broken(
        self, start: int, end: int, held: list[str], exc: csv.Error, header: list[str]
    ) -> Record:
        """Return the rejected record of a line the CSV reader could not parse."""
        reason = f"bad CSV: {exc}"
        if end > start:
            reason += f" on line {end}, in a quoted field that starts on this line"
        if undecodable := self.lines.bad.pop(start, None):
            reason = f"{undecodable}; {reason}"
        # What a lenient reading of the line gives, for --errors.
        first = held[0].rstrip("\r\n") if held else ""
        values = next(csv.reader([first]), [])
        return Record(
            start, {**dict(zip(header, values, strict=False)), "_row": reason}
        )

    def _jsonl(self) -> Iterator[Record]:
        lines = self.lines
        bad = lines.bad
        columns = self.columns
        reported: set[str] = set()
        for text in lines:
            if not text.strip():
                continue
            line = lines.line
            undecodable = bad.pop(line, None) if bad else None
            try:
                obj = json.loads(text, parse_float=Decimal)
            except (ValueError, RecursionError) as exc:
                detail = (
                    f"at column {exc.colno}: {exc.msg}"
                    if isinstance(exc, json.JSONDecodeError)
                    else "(nested too deeply)"
                )
                yield Record(line, {"_row": undecodable or f"invalid JSON {detail}"})
                continue
            if not isinstance(obj, dict):
                yield Record(line, {"_row": undecodable or "expected a JSON object"})
                continue
            obj = {
                str(k).lower(): v for k, v in obj.items() if not str(k).startswith("_")
            }
            parts = [undecodable] if undecodable else []
            unknown = [k for k in obj if k not in columns]
            if unknown:
                if self.strict:
                    parts.append(f"unknown key(s) {', '.join(unknown)}")
                else:
                    if new := [k for k in unknown if k not in reported]:
                        if len(reported) < 1000:
                            reported.update(new)
                        message = self._unknown(new, line, "key")
                        self.notices.append(f"{message}; ignored")
                    for k in unknown:
                        del obj[k]
            missing = [k for k in self.required if k not in obj]
            if missing:
                parts.append(f"missing key(s) {', '.join(missing)}")
            if parts:
                yield Record(line, {**obj, "_row": "; ".join(parts)})
                continue
            yield Record(line, obj)


def error_line(exc: BaseException, default: str) -> str:
    """Return the first line of *exc*'s message (details follow it), or *default*."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else default


def open_input(path: str) -> tuple[IO[bytes], int | None]:
    """Open *path* ('-' is standard input) as bytes; return it and its size if known."""
    if path == "-":
        return sys.stdin.buffer, None
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise CommandError(f"Cannot open {path}: {exc.strerror}") from None
    try:
        size = os.fstat(stream.fileno()).st_size
    except OSError:
        size = None
    return stream, size or None


def open_output(
    path: str | None, stdout: TextIO, *, errors: str = "strict"
) -> tuple[TextIO, bool]:
    """Open *path* for UTF-8 text output ('-' or None is *stdout*); say if to close."""
    if path in (None, "-"):
        return stdout, False
    try:
        return open(path, "w", encoding="utf-8", errors=errors, newline=""), True  # noqa: SIM115
    except OSError as exc:
        raise CommandError(f"Cannot write {path}: {exc.strerror}") from None


def text_value(value: Any) -> str:
    """Return *value* as the text a CSV cell holds (booleans as true/false)."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def json_value(value: Any) -> Any:
    """Return *value* in a JSON-serialisable form (decimals as strings)."""
    if isinstance(value, Decimal):
        return str(value)
    return value


class RowWriter:
    """Write dict rows as CSV (with a header) or JSON Lines."""

    def __init__(self, out: TextIO, *, fmt: str, columns: Sequence[str]) -> None:
        self.out = out
        self.fmt = fmt
        self.columns = list(columns)
        self._csv = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(self.columns)

    def write(self, row: Mapping[str, Any]) -> None:
        """Write one row."""
        if self._csv is not None:
            self._csv.writerow([text_value(row.get(c)) for c in self.columns])
        else:
            self.out.write(
                json.dumps(
                    {c: json_value(row.get(c)) for c in self.columns if c in row},
                    ensure_ascii=False,
                )
                + "\n"
            )


class RejectWriter:
    """Write rejected rows with `_line` and `_errors`, to be fixed and fed back."""

    def __init__(self, path: str, *, fmt: str, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = list(columns)
        # Bytes that were not UTF-8 go back as they came (surrogate escapes).
        self.out, _ = open_output(path, sys.stdout, errors="surrogateescape")
        self.writer = RowWriter(
            self.out, fmt=fmt, columns=[*self.columns, "_line", "_errors"]
        )

    def write(self, rejection: Rejection) -> None:
        """Write one rejected row."""
        row: dict[str, Any] = {
            k: v for k, v in rejection.data.items() if k in self.columns
        }
        row["_line"] = rejection.line
        row["_errors"] = rejection.message().split(": ", 1)[1]
        self.writer.write(row)

    def close(self) -> None:
        """Flush and close the file."""
        self.out.close()


class Progress:
    """A one-line progress bar on a terminal's standard error; silent elsewhere.

    *total* is what the position passed to update() runs up to (the input's
    bytes for an import, the rows to write for seed_demo); None draws no bar.
    """

    INTERVAL = 0.25

    def __init__(self, stream: Any, *, total: int | None, enabled: bool) -> None:
        # Django's OutputWrapper would style every redraw as an error.
        stream = getattr(stream, "_out", stream)
        self.stream = stream
        self.total = total
        self.enabled = enabled and _isatty(stream)
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, rows: int, position: int) -> None:
        """Redraw the bar at most every INTERVAL seconds."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.INTERVAL:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        text = f"{rows:>12,} rows {rows / elapsed:>10,.0f} rows/s"
        if self.total and position:
            fraction = min(position / self.total, 1.0)
            filled = int(fraction * 24)
            eta = elapsed * (1 - fraction) / fraction if fraction else 0
            text = (
                f"[{'#' * filled}{'.' * (24 - filled)}] {fraction:>4.0%} {text}"
                f"  ETA {timedelta(seconds=int(eta))}"
            )
        self.stream.write(f"\r{text}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        """Clear the bar."""
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _isatty(stream: Any) -> bool:
    stream = getattr(stream, "_out", stream)  # Django's OutputWrapper
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@dataclass(slots=True)
class RunStats:
    """Counters of one import run, printed as a key=value summary line."""

    read: int = 0
    rejected: int = 0
    superseded: int = 0
    result: UpsertResult = field(default_factory=UpsertResult)
    started: float = field(default_factory=time.monotonic)

    def summary(self, *, dry_run: bool) -> str:
        """Return the parseable closing line."""
        seconds = max(time.monotonic() - self.started, 1e-6)
        return (
            f"{'dry-run ' if dry_run else ''}read={self.read}"
            f" created={self.result.created} updated={self.result.updated}"
            f" unchanged={self.result.unchanged} superseded={self.superseded}"
            f" rejected={self.rejected} seconds={seconds:.2f}"
            f" rows_per_s={self.read / seconds:.0f}"
        )


class Prefetcher:
    """Run an iterator in a background thread, a few items ahead of its consumer.

    Parsing and validating the next batch (pure Python) then overlaps the
    database work on the current one, which releases the GIL while it waits.
    An exception raised by the iterator is re-raised to the consumer in order.
    A database connection the iterator opened (Django's are per thread) is
    closed when the thread ends.
    """

    _DONE = object()

    def __init__(self, iterator: Iterator[Any], *, depth: int = 2) -> None:
        self._queue: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(
            maxsize=depth
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(iterator,), name="bulkio-prefetch", daemon=True
        )
        self._thread.start()

    def _put(self, item: tuple[Any, BaseException | None]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def _run(self, iterator: Iterator[Any]) -> None:
        try:
            for item in iterator:
                if not self._put((item, None)):
                    return
        except BaseException as exc:  # handed over to the consumer thread
            self._put((None, exc))
            return
        finally:
            connections.close_all()
        self._put((self._DONE, None))

    def __iter__(self) -> Iterator[Any]:
        while True:
            item, error = self._queue.get()
            if error is not None:
                raise error
            if item is self._DONE:
                return
            yield item

    def close(self) -> None:
        """Stop the background thread (it may be blocked reading standard input)."""
        self._stop.set()
        self._thread.join(timeout=1)


@dataclass(slots=True)
class _Batch:
    """A batch on its way from the reader thread to the writes."""

    notices: list[str]
    records: Sequence[Record]
    items: list[Any]  # validated
    rejections: list[Rejection]
    position: int
    # Once prepared (in the reader thread when ahead): the last row of each
    # key, the (earlier line, line, key) of the repeats, how many there were.
    latest: dict[Any, Any] | None = None
    superseded: list[tuple[int, int, Any]] = field(default_factory=list)
    repeats: int = 0


class _StrictStop(Exception):
    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection


class ImportCommand(BaseCommand):
    """Shared shell of the import commands: stream, validate, upsert by batch."""

    columns: ClassVar[Sequence[str]] = ()
    required: ClassVar[Sequence[str]] = ()
    key_name: ClassVar[str] = "key"
    # prepare() may run in the reader thread, on a connection of its own, up
    # to two batches ahead of the writes: say so only when its queries read
    # nothing that the run's own earlier batches write.
    prepare_ahead: ClassVar[bool] = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="CSV or JSON Lines file; '-' reads stdin.")
        parser.add_argument(
            "--format", choices=FORMATS, help="Input format (default: by extension)."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"Rows per transaction (default {DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Validate and count everything, then roll back: nothing is written.",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Stop at the first bad row; nothing of its batch is written.",
        )
        parser.add_argument(
            "--errors",
            metavar="FILE",
            help="Also write rejected rows (with _line and _errors) to FILE, in the"
            " input format, to fix and feed back.",
        )

    # Hooks for the concrete commands.
    def validate(self, records: Sequence[Record]) -> tuple[list[Any], list[Rejection]]:
        """Check a batch in pure Python (no database: runs in the reader thread)."""
        raise NotImplementedError

    def prepare(
        self, items: list[Any]
    ) -> tuple[list[tuple[int, Any]], list[Rejection]]:
        """Resolve validated items against the database, before the transaction.

        Return (line, row) pairs for upsert, and the rejections.
        """
        raise NotImplementedError

    def upsert(self, rows: list[Any]) -> UpsertResult:
        """Write a prepared batch inside its transaction."""
        raise NotImplementedError

    def row_key(self, row: Any) -> Any:
        """Return the natural key of a prepared row (the last occurrence wins)."""
        raise NotImplementedError

    def check_options(self, options: dict[str, Any]) -> None:
        """Validate command-specific options before reading."""

    def after_batches(self) -> None:
        """Finish the load after its last batch, failed or not, before the summary."""

    def handle(self, *args: Any, **options: Any) -> None:
        # The run allocates millions of short-lived containers, and each full
        # collection would scan the several hundred thousand objects of Django
        # and the app again: exempt those (about a quarter of the parse and
        # validation time).
        gc.freeze()
        try:
            self._handle(**options)
        finally:
            gc.unfreeze()

    def _handle(self, **options: Any) -> None:
        batch_size = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        self.options = options
        self.verbosity = options["verbosity"]
        fmt = detect_format(options["file"], options["format"])
        self.check_options(options)
        rejects = (
            RejectWriter(options["errors"], fmt=fmt, columns=self.columns)
            if options["errors"]
            else None
        )
        try:
            stream, size = open_input(options["file"])
        except CommandError:
            if rejects is not None:
                rejects.close()
            raise
        dry_run, strict = options["dry_run"], options["strict"]
        reader = RecordReader(
            stream,
            fmt=fmt,
            columns=self.columns,
            required=self.required,
            strict=strict,
        )
        self._seen: dict[Any, int] = {}
        stats = RunStats()
        progress = Progress(self.stderr, total=size, enabled=self.verbosity >= 1)
        failure: str | None = None
        # Another connection cannot see the rows of an enclosing transaction
        # (a caller's, or a test's).
        self._prepared_ahead = self.prepare_ahead and not connection.in_atomic_block
        batches = Prefetcher(self._checked_batches(reader, batch_size))
        try:
            for batch in batches:
                self._notify(batch.notices)
                self._run_batch(batch, stats, rejects, dry_run=dry_run, strict=strict)
                progress.update(stats.read, batch.position)
        except BulkFormatError as exc:
            failure = f"{options['file']}: {exc}"
        except _StrictStop as stop:
            failure = f"--strict: stopped at {stop.rejection.message()}"
        except KeyboardInterrupt:
            failure = (
                f"interrupted near line {reader.line}; batches before it are saved:"
                " rerun the same command to finish (rows are upserted, not duplicated)"
            )
        except DatabaseError as exc:
            message = error_line(exc, str(exc))
            failure = (
                f"database error near line {reader.line}: {message}; rerun the same"
                " command to finish (rows are upserted, not duplicated)"
            )
        finally:
            batches.close()
            progress.close()
            # Said after the last batch, as of a file with no rows.
            self._notify(reader.notices)
            if rejects is not None:
                rejects.close()
            if stream is not sys.stdin.buffer:
                stream.close()
        # Before the summary, so that its seconds and rows/s include this work.
        self.after_batches()
        if self.verbosity >= 1:
            style = self.style.SUCCESS if not (failure or stats.rejected) else None
            self.stdout.write(
                f"{self.command_name()}: {stats.summary(dry_run=dry_run)}",
                style or self.style.WARNING,
            )
        if failure:
            raise CommandError(failure)
        if stats.rejected:
            hint = f"; see {options['errors']}" if options["errors"] else ""
            raise CommandError(f"{stats.rejected} row(s) rejected{hint}")

    def command_name(self) -> str:
        """Return the command's name for the summary line."""
        return type(self).__module__.rsplit(".", 1)[-1]

    def _notify(self, notices: list[str]) -> None:
        if self.verbosity >= 1:
            for notice in notices:
                self.stderr.write(notice, self.style.WARNING)
        notices.clear()

    def _checked_batches(
        self, reader: RecordReader, batch_size: int
    ) -> Iterator[_Batch]:
        """Yield each batch with the reader's notices, its validation (and
        preparation, when ahead) and the bytes read up to its end."""
        for records in itertools.batched(reader, batch_size):
            notices, reader.notices = reader.notices, []
            good: list[Record] = []
            rejections: list[Rejection] = []
            for record in records:
                if "_row" in record.data:
                    reason = record.data["_row"]
                    rejections.append(
                        Rejection(record.line, record.data, {"_row": [reason]})
                    )
                else:
                    good.append(record)
            items, more = self.validate(good)
            batch = _Batch(
                notices, records, items, rejections + more, reader.bytes_read
            )
            if self._prepared_ahead:
                self._prepare(batch)
            yield batch

    def _prepare(self, batch: _Batch) -> None:
        """Prepare the batch's items and keep the last row of each key."""
        rows, more = self.prepare(batch.items)
        batch.rejections.extend(more)
        # A key repeated in the batch: the last occurrence wins. The memo of
        # the lines of keys seen so far names what each repeat supersedes,
        # within the batch and (as far as the memo reaches) across batches.
        seen = self._seen
        if len(seen) + len(rows) > KEY_MEMO_SIZE:
            seen.clear()
        latest: dict[Any, Any] = {}
        row_key = self.row_key
        for line, row in rows:
            key = row_key(row)
            if (earlier := seen.get(key)) is not None:
                batch.superseded.append((earlier, line, key))
            seen[key] = line
            latest[key] = row
        batch.latest = latest
        batch.repeats = len(rows) - len(latest)

    def _run_batch(
        self,
        batch: _Batch,
        stats: RunStats,
        rejects: RejectWriter | None,
        *,
        dry_run: bool,
        strict: bool,
    ) -> None:
        records, rejections = batch.records, batch.rejections
        stats.read += len(records)
        if strict and rejections:
            rejections.sort(key=lambda r: r.line)
            raise _StrictStop(rejections[0])
        # Validation and slow work (password hashing) happen before the
        # transaction opens, so it never idles past idle_in_transaction timeout.
        if batch.latest is None:
            self._prepare(batch)
            if strict and rejections:
                rejections.sort(key=lambda r: r.line)
                raise _StrictStop(rejections[0])
        latest = batch.latest
        assert latest is not None  # noqa: S101 - for the type checker
        stats.superseded += batch.repeats
        with transaction.atomic():
            result = self.upsert(list(latest.values())) if latest else UpsertResult()
            if dry_run:
                transaction.set_rollback(True)
        stats.result += result
        rejections.sort(key=lambda r: r.line)
        stats.rejected += len(rejections)
        if self.verbosity >= 2:
            self.stdout.write(
                f"batch lines {records[0].line}-{records[-1].line}:"
                f" created={result.created} updated={result.updated}"
                f" unchanged={result.unchanged} rejected={len(rejections)}"
            )
        for rejection in rejections:
            self.stderr.write(rejection.message())
            if rejects is not None:
                rejects.write(rejection)
        if self.verbosity >= 1:
            for earlier, line, key in sorted(batch.superseded):
                self.stderr.write(
                    f"line {earlier}: superseded by line {line}"
                    f" (same {self.key_name} {key!r})",
                    self.style.WARNING,
                )
