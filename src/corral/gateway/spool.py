"""The on-disk spool: trace batches the store could not take, kept as JSONL files until it can."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("corral.gateway.spool")
FILE_BYTES = 4 * 1024 * 1024  # start a new file past this, so a replayed file is a manageable batch


def _encode(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z)


def _decode(line: bytes) -> dict[str, Any]:
    record = orjson.loads(line)
    at = record.get("at")
    if isinstance(at, str):
        record["at"] = datetime.fromisoformat(at.replace("Z", "+00:00"))
    return record


class Spool:
    """Append-only JSONL files under `directory`, capped at `max_bytes` in all.

    Writers append whole batches; the replayer takes the oldest finished file, and deletes it only
    after the store has committed its rows, so a crash in between replays it again (inserts skip
    rows already present).
    """

    def __init__(self, directory: Path, max_bytes: int, warn_fraction: float = 0.8) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.warn_fraction = warn_fraction
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._current: Path | None = None
        self._seq = 0
        self.dropped = 0
        self._warned = False
        self.bytes = sum(p.stat().st_size for p in self._files())

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob("spool-*.jsonl"))

    def _new_file(self) -> Path:
        self._seq += 1
        return self.directory / f"spool-{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.jsonl"

    @property
    def fill(self) -> float:
        return self.bytes / self.max_bytes

    @property
    def near_cap(self) -> bool:
        return self.fill >= self.warn_fraction

    def write(self, records: list[dict[str, Any]]) -> int:
        """Append records; returns how many were dropped because the spool is full."""
        if not records:
            return 0
        data = b"".join(_encode(r) + b"\n" for r in records)
        with self._lock:
            if self.bytes + len(data) > self.max_bytes:
                self.dropped += len(records)
                log.error(
                    "trace spool %s is full (%.0f MB): dropped %d traces; raise tracing.spool_max_mb or "
                    "bring the store back",
                    self.directory,
                    self.max_bytes / 1e6,
                    len(records),
                )
                return len(records)
            if self._current is None or self._current.stat().st_size > FILE_BYTES:
                self._current = self._new_file()
            with open(self._current, "ab") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            self.bytes += len(data)
            if self.near_cap and not self._warned:
                self._warned = True
                log.warning("trace spool %s is %.0f%% full", self.directory, 100 * self.fill)
        return 0

    def pending(self) -> bool:
        return self.bytes > 0

    def oldest(self) -> Path | None:
        """The oldest file, closed to further appends so it can be replayed and removed."""
        with self._lock:
            files = self._files()
            if not files:
                return None
            if files[0] == self._current:
                self._current = None
            return files[0]

    @staticmethod
    def read(path: Path) -> Iterator[dict[str, Any]]:
        with open(path, "rb") as handle:
            for line in handle:
                if line.strip():
                    try:
                        yield _decode(line)
                    except orjson.JSONDecodeError:
                        log.error("skipping a corrupt line in %s", path)  # a torn write at a crash

    def remove(self, path: Path) -> None:
        with self._lock:
            size = path.stat().st_size if path.exists() else 0
            path.unlink(missing_ok=True)
            self.bytes = max(0, self.bytes - size)
            if not self.near_cap:
                self._warned = False
