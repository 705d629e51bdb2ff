"""The samples file of a bench run: one JSON object a line, appended and flushed as it arrives.

Line 1 is the run header (method, pacing, judgement); every other line is one request:
`{"kind": "sample", "phase": "warmup"|"counted", "index": k, "error": ..., **sample}`.
A line counts only once it ends with a newline: a run killed mid-write leaves at most an
unterminated last line, which readers ignore and a resumed run cuts off before appending.
Any other bad line makes the whole file refused, with the file, line and reason.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import orjson

from proxy.core.domain import Pair, Sample
from proxy.method.plan import BenchError, Judgement, Method, Pacing

Phase = Literal["warmup", "counted"]
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Record:
    """One request of the run as the file keeps it."""

    sample: Sample
    phase: Phase
    index: int
    error: str | None = None

    def to_line(self) -> bytes:
        entry = {"kind": "sample", "phase": self.phase, "index": self.index,
                 "error": self.error, **self.sample.to_dict()}  # fmt: skip
        return orjson.dumps(entry) + b"\n"


@dataclass(frozen=True, slots=True)
class Header:
    method: Method
    pacing: Pacing
    judgement: Judgement
    started: float

    def to_line(self) -> bytes:
        entry = {
            "kind": "header",
            "version": FORMAT_VERSION,
            "started": self.started,
            "method": self.method.to_dict(),
            "pacing": self.pacing.to_dict(),
            "judgement": self.judgement.to_dict(),
        }
        return orjson.dumps(entry) + b"\n"


@dataclass(slots=True)
class RunLog:
    """A samples file as read: its header, its complete records, and where they end."""

    path: Path
    header: Header
    records: list[Record] = field(default_factory=list)
    complete_bytes: int = 0  # length of the newline-terminated part
    has_torn_tail: bool = False

    def counts(self) -> Counter[tuple[Pair, Phase]]:
        return Counter((r.sample.pair, r.phase) for r in self.records)

    def counted(self) -> list[Record]:
        return [r for r in self.records if r.phase == "counted"]


def read_run(path: Path) -> RunLog:
    """Parse and check a samples file. Raises BenchError naming file, line and reason."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BenchError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    complete = data[: data.rfind(b"\n") + 1]
    lines = complete.splitlines()
    if not lines:
        raise BenchError(f"{path}: empty samples file (no header line)")
    header = _parse_header(path, lines[0])
    log = RunLog(path, header, complete_bytes=len(complete), has_torn_tail=complete != data)
    pairs = {spec.pair for spec in header.method.pairs}
    seen: set[tuple[Pair, str, int]] = set()
    for number, line in enumerate(lines[1:], start=2):
        record = _parse_record(path, number, line)
        key = (record.sample.pair, record.phase, record.index)
        if record.sample.pair not in pairs:
            raise BenchError(f"{path}:{number}: pair {record.sample.pair} is not in the header")
        if key in seen:
            raise BenchError(
                f"{path}:{number}: duplicate {record.phase} sample #{record.index} "
                f"of {record.sample.pair}"
            )
        seen.add(key)
        log.records.append(record)
    return log


def _parse_header(path: Path, line: bytes) -> Header:
    try:
        entry = orjson.loads(line)
        if entry.get("kind") != "header":
            raise ValueError("the first line is not a bench header")
        if entry.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported version {entry.get('version')!r}")
        return Header(
            method=Method.from_dict(entry["method"]),
            pacing=Pacing(**entry["pacing"]),
            judgement=Judgement.from_dict(entry["judgement"]),
            started=float(entry["started"]),
        )
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"{path}:1: not a bench samples file: {_reason(exc)}") from None


def _parse_record(path: Path, number: int, line: bytes) -> Record:
    try:
        entry = orjson.loads(line)
        if entry.get("kind") != "sample":
            raise ValueError(f"unexpected kind {entry.get('kind')!r}")
        phase = entry["phase"]
        if phase not in ("warmup", "counted"):
            raise ValueError(f"unknown phase {phase!r}")
        index = entry["index"]
        if not isinstance(index, int) or index < 0:
            raise ValueError(f"bad index {index!r}")
        error = entry.get("error")
        return Record(Sample.from_dict(entry), phase, index, None if error is None else str(error))
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"{path}:{number}: malformed sample line: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class SampleWriter:
    """Appends records to a samples file, one unbuffered write per line. Holds an exclusive
    lock on the file, so two runs can never append to the same one."""

    def __init__(self, path: Path, file: IO[bytes]) -> None:
        self.path = path
        self._file = file
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise BenchError(f"{path}: another bench run is writing this file") from None

    @classmethod
    def create(cls, path: Path, header: Header) -> SampleWriter:
        """Start a new file. An existing file is replaced only if it holds no whole line
        (a run killed before its header was written); otherwise this refuses."""
        if path.exists() and b"\n" not in path.read_bytes():
            path.unlink()
        writer = cls(path, path.open("xb", buffering=0))
        writer._write(header.to_line())
        return writer

    @classmethod
    def resume(cls, log: RunLog) -> SampleWriter:
        """Append to an existing run, first cutting off a torn last line if there is one."""
        writer = cls(log.path, log.path.open("r+b", buffering=0))
        writer._file.truncate(log.complete_bytes)
        writer._file.seek(log.complete_bytes)
        return writer

    def append(self, record: Record) -> None:
        self._write(record.to_line())

    def _write(self, line: bytes) -> None:
        # Unbuffered: one write() per line, so a killed run leaves whole lines behind.
        self._file.write(line)

    def close(self) -> None:
        self._file.close()


def new_header(method: Method, pacing: Pacing, judgement: Judgement) -> Header:
    return Header(method, pacing, judgement, started=time.time())


def atomic_write(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temp file beside it, then a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
