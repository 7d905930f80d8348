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
KEEP_DEPTH = 32  # an unencodable value is stored cut to this nesting depth
CUT = "\u2026"  # what stands in for the part cut off


def clip_depth(value: Any, depth: int = KEEP_DEPTH) -> Any:
    """The value with everything nested deeper than `depth` replaced by a marker (orjson stops at 255)."""
    if isinstance(value, dict):
        return {str(k): clip_depth(v, depth - 1) for k, v in value.items()} if depth > 0 else CUT
    if isinstance(value, list | tuple):
        return [clip_depth(v, depth - 1) for v in value] if depth > 0 else CUT
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)  # orjson refuses integers past 64 bits
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()  # lone surrogates
    return value


def encodable(record: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """A copy of a record that orjson refused, each refused field cut down, with an `encoding_error` note.

    A trace must never stop the writer: a field that cannot be encoded (nested past orjson's limit, an
    odd type) is stored in a safe form instead, and the trace says why in `meta.encoding_error`.
    """
    out: dict[str, Any] = {}
    refused = []
    for name, value in record.items():
        try:
            orjson.dumps(value, default=str, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z)
            out[name] = value
        except TypeError:  # orjson.JSONEncodeError is one
            out[name] = clip_depth(value if isinstance(value, dict | list | tuple) else str(value)[:2000])
            refused.append(name)
    meta = out.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    out["meta"] = {**meta, "encoding_error": f"{', '.join(refused) or 'record'}: {error}"[:500]}
    return out


def _encode(record: dict[str, Any]) -> bytes:
    options = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
    try:
        return orjson.dumps(record, default=str, option=options)
    except TypeError as exc:
        return orjson.dumps(encodable(record, exc), default=str, option=options)


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
