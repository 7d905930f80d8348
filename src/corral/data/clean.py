"""Cleaning steps on validated rows: whitespace, empty and length filters, exact and near dedupe, PII redaction.

Each step takes rows of one schema kind and returns new rows plus counts of what it did, so a
dataset build can record exactly what happened to its input.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from corral.data.rows import canonical
from corral.guard.pii import redact

_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_whitespace(text: str) -> str:
    """Trim, collapse runs of spaces, drop trailing spaces on lines, keep at most one blank line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def map_texts(row: dict[str, Any], kind: str, fn: Callable[[str], str]) -> dict[str, Any]:
    """A copy of `row` with `fn` applied to every text field of its kind."""
    out = dict(row)
    if kind == "chat":
        out["messages"] = [_map_message(m, fn) for m in row["messages"]]
    elif kind == "prompt_completion":
        out["prompt"], out["completion"] = fn(row["prompt"]), fn(row["completion"])
    else:
        out["text"] = fn(row["text"])
    return out


def _calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = message.get("tool_calls")
    return (
        [c for c in calls if isinstance(c, dict) and isinstance(c.get("function"), dict)]
        if isinstance(calls, list)
        else []
    )


def _map_message(message: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    """`fn` over a message's text: its content and its tool calls' arguments (PII hides there too)."""
    out = {**message, "content": fn(message["content"])}
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {**c, "function": {**c["function"], "arguments": fn(str(c["function"].get("arguments", "")))}}
            for c in _calls(message)
        ]
    return out


def _message_text(message: dict[str, Any]) -> str:
    calls = [f"{c['function'].get('name')} {c['function'].get('arguments')}" for c in _calls(message)]
    return "\n".join([message["content"], *calls]) if calls else message["content"]


def texts(row: dict[str, Any], kind: str) -> list[str]:
    if kind == "chat":
        return [_message_text(m) for m in row["messages"]]
    if kind == "prompt_completion":
        return [row["prompt"], row["completion"]]
    return [row["text"]]


def _is_empty(row: dict[str, Any], kind: str) -> bool:
    if kind == "chat":
        spoken = [m for m in row["messages"] if m["role"] in ("user", "assistant")]
        return not spoken or any(not m["content"] and not m.get("tool_calls") for m in spoken)
    return any(not t for t in texts(row, kind))


def clean_rows(
    rows: list[dict[str, Any]], kind: str, *, min_chars: int = 1, max_chars: int | None = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Normalize whitespace, then drop empty rows and rows outside [min_chars, max_chars]."""
    kept: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    for row in rows:
        row = map_texts(row, kind, normalize_whitespace)
        size = sum(len(t) for t in texts(row, kind))
        if _is_empty(row, kind):
            dropped["empty"] += 1
        elif size < min_chars:
            dropped["too_short"] += 1
        elif max_chars is not None and size > max_chars:
            dropped["too_long"] += 1
        else:
            kept.append(row)
    return kept, {
        "empty": dropped["empty"],
        "too_short": dropped["too_short"],
        "too_long": dropped["too_long"],
    }


def redact_rows(rows: list[dict[str, Any]], kind: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Replace PII in every text field with typed placeholders; counts findings by PII kind."""
    found: Counter[str] = Counter()

    def one(text: str) -> str:
        result = redact(text)
        found.update(f.kind for f in result.findings)
        return result.text

    return [map_texts(row, kind, one) for row in rows], dict(found)


# -- dedupe ------------------------------------------------------------------------------------
PERMUTATIONS = 32
BANDS = 8  # 8 bands of 4 rows: pairs above ~0.6 Jaccard almost always share a band
_PRIME = (1 << 61) - 1
_SEEDS = [
    (
        int.from_bytes(hashlib.sha256(f"a{i}".encode()).digest()[:8], "big") % _PRIME or 1,
        int.from_bytes(hashlib.sha256(f"b{i}".encode()).digest()[:8], "big") % _PRIME,
    )
    for i in range(PERMUTATIONS)
]


def _shingles(text: str, size: int = 3) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < size:
        return {" ".join(words)}
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def _minhash(shingles: set[str]) -> tuple[int, ...]:
    hashes = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big") for s in shingles]
    return tuple(min((a * h + b) % _PRIME for h in hashes) for a, b in _SEEDS)


def dedupe_rows(
    rows: list[dict[str, Any]], kind: str, *, near: float | None = 0.85
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Keep the first of each group of duplicates: exact (same content) and, unless `near` is None,
    near duplicates whose word-trigram Jaccard similarity is at least `near` (MinHash + LSH)."""
    seen: set[str] = set()
    unique: list[dict[str, Any]] = []
    exact = 0
    for row in rows:
        content = canonical({k: v for k, v in row.items() if k not in ("split", "source_trace")})
        if content in seen:
            exact += 1
            continue
        seen.add(content)
        unique.append(row)
    if near is None:
        return unique, {"exact": exact, "near": 0}
    per_band = PERMUTATIONS // BANDS
    buckets: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    kept_shingles: list[set[str]] = []
    kept: list[dict[str, Any]] = []
    near_count = 0
    for row in unique:
        shingles = _shingles("\n".join(texts(row, kind)))
        signature = _minhash(shingles)
        keys = [(b, signature[b * per_band : (b + 1) * per_band]) for b in range(BANDS)]
        candidates = {i for key in keys for i in buckets.get(key, [])}
        if any(
            len(shingles & kept_shingles[i]) / len(shingles | kept_shingles[i]) >= near for i in candidates
        ):
            near_count += 1
            continue
        for key in keys:
            buckets.setdefault(key, []).append(len(kept))
        kept_shingles.append(shingles)
        kept.append(row)
    return kept, {"exact": exact, "near": near_count}
