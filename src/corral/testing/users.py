"""Simulated users of a deployment serving the starter model: they ask, rate the answers, correct them.

    python -m corral.testing.users --url http://127.0.0.1:8000 --key $KEY --deployment support \\
        --corrections --requests 150

Questions come from the shipped starter corpora: the intents the starter model knows and the held-back
ones (loyalty points, gift cards, warranty). Each simulated user has a stable id (the `user` field), so
a canary keeps them on one arm. An answer equal to the corpus answer is rated 1; any other 0, and with
`--corrections` the corpus answer goes with it as the `correction` a refresh trains on. The refresh
loop in docs/refresh.md and the end-to-end test tests/e2e/test_refresh.py both use it.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
from collections import Counter
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx

STARTER = Path(str(files("corral.data") / "starter"))


def _rows(name: str, split: str | None = None) -> list[dict[str, Any]]:
    with open(STARTER / name, encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    return [r for r in rows if split is None or r.get("split") == split]


def corpus(split: str = "train") -> tuple[dict[str, str], list[str], list[str]]:
    """Every question's right answer; the held-back (new) and the known questions of one split."""
    answers: dict[str, str] = {}
    for name in ("support_known.jsonl", "support_new.jsonl"):
        for row in _rows(name):
            answers.setdefault(row["messages"][0]["content"], row["messages"][-1]["content"])
    new = list(dict.fromkeys(r["messages"][0]["content"] for r in _rows("support_new.jsonl", split)))
    known = list(dict.fromkeys(r["messages"][0]["content"] for r in _rows("support_known.jsonl", split)))
    return answers, new, known


class Users:
    """Simulated users: each asks, rates the answer (1 right, 0 wrong) and, with `corrections`, sends
    the right answer when it was wrong. Thread-safe; `start` runs them in threads until `stop`."""

    def __init__(
        self,
        base: str,
        key: str,
        answers: dict[str, str],
        questions: list[str],
        *,
        deployment: str = "support",
        corrections: bool = True,
        population: int = 400,
        max_tokens: int = 48,
    ) -> None:
        self.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        self.answers, self.questions, self.deployment = answers, questions, deployment
        self.corrections, self.population, self.max_tokens = corrections, population, max_tokens
        self.statuses: list[int] = []
        self.traces: list[tuple[str, str]] = []  # (trace id, user)
        self.scores: Counter[float] = Counter()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._asking = 0

    def ask(self, user: str, question: str) -> int:
        """One question from `user`, then its feedback; the chat completion's HTTP status."""
        reply = self.client.post(
            "/v1/chat/completions",
            json={
                "model": self.deployment, "messages": [{"role": "user", "content": question}], "user": user,
                "max_tokens": self.max_tokens, "temperature": 0,
            },
        )  # fmt: skip
        with self._lock:
            self.statuses.append(reply.status_code)
        if reply.status_code != 200:
            return reply.status_code
        trace = reply.headers["x-corral-trace-id"]
        right = self.answers.get(question)
        said = (reply.json()["choices"][0]["message"]["content"] or "").strip()
        score = 1.0 if said == right else 0.0
        with self._lock:
            self.traces.append((trace, user))
            self.scores[score] += 1
        feedback: dict[str, Any] = {"trace_id": trace, "score": score}
        if score < 1 and self.corrections and right:
            feedback["correction"] = right
        self.client.post("/v1/feedback", json=feedback)
        return reply.status_code

    def _more(self, until: float | None, limit: int | None) -> bool:
        """Whether a loop sends one more request (counted as in flight when it does)."""
        if self._stop.is_set() or (until is not None and time.monotonic() >= until):
            return False
        with self._lock:
            if limit is not None and len(self.statuses) + self._asking >= limit:
                return False
            self._asking += 1
        return True

    def _loop(self, seed: int, rate: float | None, until: float | None, limit: int | None) -> None:
        rng = random.Random(seed)
        while self._more(until, limit):
            started = time.monotonic()
            try:
                self.ask(f"user-{rng.randrange(self.population)}", rng.choice(self.questions))
            except httpx.HTTPError:
                with self._lock:
                    self.statuses.append(0)  # no answer at all
                self._stop.wait(1)
            finally:
                with self._lock:
                    self._asking -= 1
            if rate:
                self._stop.wait(max(0.0, 1 / rate - (time.monotonic() - started)))

    def start(
        self,
        threads: int = 4,
        rate: float | None = None,
        duration_s: float | None = None,
        limit: int | None = None,
    ) -> None:
        """Run `threads` loops of users' requests (`rate` per second in all, at most) until `stop`,
        `duration_s` or `limit` requests."""
        self._stop.clear()
        until = None if duration_s is None else time.monotonic() + duration_s
        per_thread = rate / threads if rate else None
        self._threads = [
            threading.Thread(target=self._loop, args=(i, per_thread, until, limit), daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def summary(self) -> str:
        with self._lock:
            sent, ok = len(self.statuses), self.statuses.count(200)
            right, wrong = int(self.scores[1.0]), int(self.scores[0.0])
        rated = f"{right} rated right, {wrong} wrong" + (" (corrected)" if self.corrections else "")
        return f"{sent} requests, {ok} answered, {sent - ok} failed; {rated}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m corral.testing.users", description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway (default %(default)s)")
    p.add_argument("--key", required=True, help="an API key allowed on the deployment")
    p.add_argument("--deployment", default="support", help="the model name sent (default %(default)s)")
    p.add_argument("--corrections", action="store_true", help="send the right answer with each bad rating")
    p.add_argument("--users", type=int, default=100, help="distinct simulated users (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="requests in flight at once (default %(default)s)")
    p.add_argument("--new-share", type=float, default=0.5, help="share of held-back questions (default 0.5)")
    p.add_argument("--requests", type=int, help="stop after this many requests")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until killed)")
    p.add_argument("--rate", type=float, help="at most this many requests per second in all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress-s", type=float, default=5.0, help=argparse.SUPPRESS)
    return p


def _check(users: Users, key_hint: str) -> str | None:
    """Why the gateway cannot be used with this key and deployment, or None."""
    try:
        reply = users.client.get("/v1/models")
    except httpx.HTTPError as e:
        return f"cannot reach the gateway at {users.client.base_url}: {e.__class__.__name__}: {e}"
    if reply.status_code in (401, 403):
        return f"the gateway refused the key {key_hint}: HTTP {reply.status_code}"
    if reply.status_code != 200:
        return f"GET /v1/models answered HTTP {reply.status_code}: {reply.text[:200]}"
    models = {m.get("id") for m in reply.json().get("data", [])}
    if users.deployment not in models:
        return f"the key may not use the deployment {users.deployment!r} (it may use: {', '.join(sorted(models))})"
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0 <= args.new_share <= 1 or args.users < 1 or args.threads < 1:
        print("error: --new-share must be within 0..1, --users and --threads at least 1", file=sys.stderr)
        return 2
    answers, new, known = corpus()
    rng = random.Random(args.seed)
    weights = [args.new_share / len(new)] * len(new) + [(1 - args.new_share) / len(known)] * len(known)
    questions = rng.choices(new + known, weights=weights, k=2000)
    users = Users(
        args.url.rstrip("/"), args.key, answers, questions, deployment=args.deployment,
        corrections=args.corrections, population=args.users,
    )  # fmt: skip
    problem = _check(users, args.key[:8] + "…")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    stop = threading.Event()
    before = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    users.start(args.threads, args.rate, args.duration, args.requests)
    try:
        while users.running() and not stop.wait(min(5.0, args.progress_s)):
            print(users.summary(), flush=True)
    finally:
        users.stop()
        for sig, handler in before.items():
            signal.signal(sig, handler)
    print(f"done: {users.summary()}", flush=True)
    failed = len(users.statuses) - users.statuses.count(200)
    return 1 if users.statuses and failed == len(users.statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
