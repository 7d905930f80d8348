"""A fixed log-bucket histogram: mergeable by adding counts, quantiles within 1% relative error."""

from __future__ import annotations

import json
import math
import warnings
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import Any

import numpy as np
import orjson

GAMMA = 1.02  # bucket i holds (GAMMA**(i-1), GAMMA**i]
RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)  # ≈ 0.0099: the stated error of every quantile
_LOG_GAMMA = math.log(GAMMA)
ZERO = "z"  # values ≤ 0 (e.g. a cached answer with no measurable latency)


def bucket_of(value: float) -> str:
    if value <= 0:
        return ZERO
    return str(math.ceil(math.log(value) / _LOG_GAMMA - 1e-12))


def representative(bucket: str) -> float:
    """The value reported for a bucket: within RELATIVE_ERROR of anything that falls in it."""
    if bucket == ZERO:
        return 0.0
    return 2 * GAMMA ** int(bucket) / (GAMMA + 1)


class LogHistogram:
    """Counts per log bucket, kept sparse as {bucket: count}; stored as JSON in each rollup row."""

    __slots__ = ("counts",)

    def __init__(self, counts: dict[str, int] | None = None) -> None:
        self.counts: dict[str, int] = dict(counts or {})

    @classmethod
    def of(cls, values: Iterable[float | None]) -> LogHistogram:
        hist = cls()
        for value in values:
            if value is not None:
                hist.add(value)
        return hist

    def add(self, value: float, count: int = 1) -> None:
        key = bucket_of(value)
        self.counts[key] = self.counts.get(key, 0) + count

    def merge(self, other: LogHistogram | dict[str, Any] | None) -> LogHistogram:
        counts = other.counts if isinstance(other, LogHistogram) else (other or {})
        mine = self.counts
        if not mine:  # the first merge is a copy (a dashboard merges hundreds of sketches a page)
            mine.update(counts)
            return self
        get = mine.get
        for key, count in counts.items():  # counts are ints as stored: int() on each would cost as much again
            mine[key] = get(key, 0) + count
        return self

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def quantile(self, q: float) -> float | None:
        """The value at nearest rank ceil(q·n), to within RELATIVE_ERROR; None when empty."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """Several quantiles from one sort of the buckets."""
        n = self.total
        if n == 0:
            return [None] * len(qs)
        counts = self.counts
        zero = counts.get(ZERO, 0)
        ordered = sorted([(int(k), c) for k, c in counts.items() if k != ZERO])
        running = list(accumulate([c for _, c in ordered], initial=zero))  # running[i]: below ordered[i]
        out: list[float | None] = []
        for q in qs:
            rank = max(1, math.ceil(q * n))
            # the first bucket whose running count reaches the rank (ZERO's when running[0] does)
            i = bisect_left(running, rank)
            out.append(0.0 if i == 0 else 2 * GAMMA ** ordered[i - 1][0] / (GAMMA + 1))
        return out

    def to_json(self) -> dict[str, int]:
        return dict(self.counts)


def nearest_rank(values: list[float], q: float) -> float | None:
    """The exact quantile the sketch approximates (for tests and the plain-way benchmark)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


# -- many histograms at once ----------------------------------------------------------------------------------
_ZERO_KEY = -(2**40)  # ZERO in the flat form: below every real bucket (even 1e-300 ms is bucket -34,880)
_COMMA = bytes.maketrans(b":", b",")
_DENSE_CELLS = 1 << 20  # groups x buckets counted densely up to this (8 MB of float64)


def _flat(texts: Sequence[str | dict[str, Any] | None]) -> tuple[np.ndarray, list[int]]:
    """All the histograms as one array [bucket, count, bucket, count, ...] with integer buckets, and each
    one's number of buckets. The stored JSON ({"240": 6, "z": 1}) is turned into "240, 6, -2**40, 1" and
    parsed by numpy in one call: no Python object per bucket."""
    strings = [t if isinstance(t, str) else orjson.dumps(t or {}).decode() for t in texts]
    sizes = [t.count(":") for t in strings]
    if not any(sizes):
        return np.zeros(0, dtype=np.int64), sizes
    body = ",".join([t.strip()[1:-1] for t, n in zip(strings, sizes, strict=True) if n]).encode()
    body = body.replace(f'"{ZERO}"'.encode(), str(_ZERO_KEY).encode()).translate(_COMMA, b'"')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy only warns when the text is not all numbers
        try:
            flat = np.fromstring(body, dtype=np.int64, sep=",")
        except (ValueError, DeprecationWarning):
            flat = None
    if flat is not None and flat.size == 2 * sum(sizes):
        return flat, sizes
    # not the form to_json writes (counts as floats, say): one histogram at a time
    pairs = [
        [(_ZERO_KEY if k == ZERO else int(k), int(c)) for k, c in json.loads(t).items()] for t in strings
    ]
    flat = np.array([x for p in pairs for pair in p for x in pair], dtype=np.int64)
    return flat, [len(p) for p in pairs]


class Sketches:
    """The histograms of many rollup rows, from their stored JSON, as flat arrays: the quantiles of any
    grouping of the rows come out of a few numpy calls, with no merged dict per group. The numbers are
    those of merging each group's LogHistograms and asking for `quantiles` (a dashboard page merges
    hundreds of histograms; this is several times faster than merging them in Python)."""

    def __init__(self, texts: Sequence[str | dict[str, Any] | None]) -> None:
        flat, sizes = _flat(texts)
        self.rows = np.repeat(np.arange(len(sizes)), sizes)
        self.keys, self.counts = flat[0::2], flat[1::2].astype(np.float64)

    def quantiles(
        self, group_of_row: Sequence[int], n_groups: int, qs: tuple[float, ...]
    ) -> list[list[float | None]]:
        """For each group 0..n_groups-1 (row i belongs to group_of_row[i]), the quantiles of its rows merged."""
        groups = np.asarray(group_of_row, dtype=np.int64)[self.rows]
        zero = self.keys == _ZERO_KEY
        zeros = np.bincount(groups[zero], weights=self.counts[zero], minlength=n_groups)
        keys, counts, groups = self.keys[~zero], self.counts[~zero], groups[~zero]
        lo = int(keys.min()) if keys.size else 0
        span = int(keys.max()) - lo + 1 if keys.size else 1
        # cells (group, bucket) in order, with running counts over all of them: every cell when they are
        # few enough (a dense count, no sort), else the cells present
        cell = groups * span + (keys - lo)
        if n_groups * span <= _DENSE_CELLS:
            cells = np.arange(n_groups * span)
            summed = np.bincount(cell, weights=counts, minlength=n_groups * span)
            first = np.arange(n_groups) * span
            past = first + span
        else:
            cells, where = np.unique(cell, return_inverse=True)
            summed = np.bincount(where, weights=counts)
            first = np.searchsorted(cells // span, np.arange(n_groups), side="left")
            past = np.searchsorted(cells // span, np.arange(n_groups), side="right")
        running = np.concatenate(([0.0], np.cumsum(summed)))
        base = running[first]
        n = running[past] - base + zeros
        ranks = np.maximum(1, np.ceil(np.outer(n, np.asarray(qs, dtype=np.float64))))
        above = ranks - zeros[:, None]  # the rank among the group's non-zero values
        # the first cell whose running count reaches it (running[i + 1] counts cells up to i)
        found = np.searchsorted(running, base[:, None] + above, side="left") - 1
        out: list[list[float | None]] = []
        for g in range(n_groups):
            if n[g] == 0:
                out.append([None] * len(qs))
                continue
            out.append([
                0.0 if above[g, j] <= 0 else 2 * GAMMA ** (int(cells[found[g, j]]) % span + lo) / (GAMMA + 1)
                for j in range(len(qs))
            ])  # fmt: skip
        return out
