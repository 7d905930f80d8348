"""corral gateway vs LiteLLM proxy vs a bare aiohttp pass-through, over one fake OpenAI upstream.

    python benchmarks/gateway_vs_litellm.py [--duration 20] [--runs 3] [--skip-litellm] [--guard]

(for a quick look at direction: --duration 3 --runs 1 --skip-litellm)

`--guard` adds three rows that send 1 KB prompts from the PII corpus (half with one to three PII
values, as in benchmarks/guard_overhead.py): the upstream direct, the bare proxy, and corral with the
guard's default policy on (pii: redact, secrets: block, injection and moderation: flag,
max_input_tokens: 8000), checked on the way in and out. Target: corral >= 0.5x the bare proxy at c=32.

Each proxy runs alone (one process each, uvloop where it can) in front of the same fake upstream
(`corral.testing.FakeUpstream`, in its own process). A closed-loop load generator, also its own
process, keeps C requests in flight for the duration and reports RPS, p50/p99 and the latency added
over calling the upstream directly. corral runs with an API key that has RPM/TPM limits, tracing on
and a SQLite store; at the end every request it answered is counted in the trace table.
LiteLLM (`litellm[proxy]==1.106.2`) is installed into benchmarks/.out/litellm-venv on first use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / ".out"
LITELLM_VENV = OUT / "litellm-venv"
LITELLM_SPEC = "litellm[proxy]==1.106.2"
BODY = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
    "max_tokens": 16,
}
GUARD_POLICY = {
    "pii": "redact",
    "secrets": "block",
    "injection": "flag",
    "moderation": "flag",
    "max_input_tokens": 8000,
}


def _bodies(model: str, pii: bool) -> list[bytes]:
    """The request bodies the load generator cycles through: one short prompt, or 256 1 KB PII prompts."""
    if not pii:
        return [json.dumps({**BODY, "model": model}).encode()]
    from guard_overhead import prompts  # benchmarks/ is on the path: this file runs from there

    return [
        json.dumps({**BODY, "model": model, "messages": [{"role": "user", "content": text}]}).encode()
        for text in prompts(256)
    ]


# -- load generator (runs in its own process) ------------------------------------------------------------
async def _load(
    url: str, key: str, model: str, concurrency: int, duration: float, warmup: float, pii: bool = False
) -> dict[str, float]:
    import itertools

    import aiohttp

    bodies = itertools.cycle(_bodies(model, pii))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0, "warmup_ok": 0}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        measure_from = start + warmup
        end = measure_from + duration

        async def worker() -> None:
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                try:
                    async with session.post(url, data=next(bodies), headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                t1 = time.perf_counter()
                if t0 < measure_from:
                    counts["warmup_ok"] += ok
                    continue
                if ok:
                    counts["ok"] += 1
                    latencies.append(t1 - t0)
                else:
                    counts["errors"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
        )

    return {
        "rps": counts["ok"] / duration,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "ok": counts["ok"],
        "errors": counts["errors"],
        "answered": counts["ok"] + counts["warmup_ok"],
    }


# -- the bare pass-through proxy (runs in its own process) ----------------------------------------------
def _bare_proxy(port: int, upstream: str) -> None:
    import aiohttp
    from aiohttp import web

    async def make() -> web.Application:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        async def proxy(request: web.Request) -> web.Response:
            async with session.post(
                upstream + "/chat/completions",
                data=await request.read(),
                headers={"Content-Type": "application/json"},
            ) as r:
                return web.Response(body=await r.read(), status=r.status, content_type="application/json")

        async def health(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/v1/chat/completions", proxy)
        app.router.add_get("/health", health)
        return app

    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    web.run_app(
        make(),
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        loop=loop_factory() if loop_factory else None,
    )


# -- orchestration --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, timeout_s: float = 120.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2):
                return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.25)
    raise SystemExit(f"{url} did not come up in {timeout_s:.0f} s")


def _start(
    cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _measure(
    url: str, key: str, model: str, concurrency: int, duration: float, pii: bool = False
) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--load",
        url,
        "--key",
        key,
        "--model",
        model,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        *(["--pii-prompts"] if pii else []),
    ]
    return dict(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))


def _cell(
    url: str, key: str, model: str, concurrency: int, args: argparse.Namespace, pii: bool = False
) -> dict[str, float]:
    """The median of `--runs` measurements of one cell, metric by metric; `answered` adds up every run."""
    import statistics

    runs = [_measure(url, key, model, concurrency, args.duration, pii) for _ in range(args.runs)]
    out = {name: statistics.median(r[name] for r in runs) for name in runs[0]}
    out["answered"] = sum(r["answered"] for r in runs)
    return out


def _ensure_litellm() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        print(f"installing {LITELLM_SPEC} into {LITELLM_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_SPEC], check=True)
    return binary


def _corral(work: Path, upstream: str, guard: bool = False) -> tuple[subprocess.Popen[bytes], str, str, Path]:
    port = _free_port()
    work.mkdir(parents=True, exist_ok=True)
    config = work / "corral.yaml"
    db = work / "corral.db"
    config.write_text(
        json.dumps(
            {
                **({"guard": {"policies": {"default": GUARD_POLICY}}} if guard else {}),
                "store": {"database_url": f"sqlite:///{db}"},
                "tracing": {"spool_dir": str(work / "spool")},
                "deployments": {
                    "bench": {
                        "routes": [
                            {
                                "url": upstream,
                                "model": "fake-model",
                                "price": {"prompt_per_1k": 0.0005, "completion_per_1k": 0.0015},
                            }
                        ]
                    }
                },
            }
        )
    )
    env = {"CORRAL_HOME": str(work / "home"), "CORRAL_ADMIN_KEY": "sk-bench-admin"}
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "corral.cli.main",
            "--config",
            str(config),
            "keys",
            "create",
            "--name",
            "bench",
            "--models",
            "bench",
            "--rpm",
            "100000000",
            "--tpm",
            "1000000000000",
            "--json",
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    key = json.loads(created.stdout)["key"]
    process = _start(
        [sys.executable, "-m", "corral.cli.main", "--config", str(config), "serve", "--port", str(port)],
        env,
        OUT / ("corral-guard.log" if guard else "corral.log"),
    )
    _wait_http(f"http://127.0.0.1:{port}/ready")
    return process, f"http://127.0.0.1:{port}/v1/chat/completions", key, db


def _litellm(work: Path, upstream: str) -> tuple[subprocess.Popen[bytes], str, str]:
    binary = _ensure_litellm()
    port = _free_port()
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: bench\n    litellm_params:\n"
        f"      model: openai/fake-model\n      api_base: {upstream}\n      api_key: sk-fake\n"
    )
    env = {
        "LITELLM_MASTER_KEY": "sk-litellm-master",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
    }
    process = _start(
        [str(binary), "--config", str(config), "--port", str(port), "--num_workers", "1"],
        env,
        OUT / "litellm.log",
    )
    _wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout_s=300)
    return process, f"http://127.0.0.1:{port}/v1/chat/completions", "sk-litellm-master"


PII = ", 1 KB PII prompts"


def _row(
    name: str, c: int, r: dict[str, float], results: dict[str, dict[int, dict[str, float]]]
) -> list[str]:
    direct = results["upstream (direct)" + (PII if name.endswith(PII) else "")]
    added = r["p50_ms"] - direct[c]["p50_ms"] if not name.startswith("upstream (direct)") else 0.0
    return [
        name,
        str(c),
        f"{r['rps']:,.0f}",
        f"{r['p50_ms']:.2f}",
        f"{r['p99_ms']:.2f}",
        f"{added:+.2f}",
        str(int(r["errors"])),
    ]


def main() -> None:
    args = _parse()
    if args.load:
        result = asyncio.run(
            _load(
                args.load,
                args.key,
                args.model,
                args.concurrency,
                args.duration,
                args.warmup,
                args.pii_prompts,
            )
        )
        print(json.dumps(result))
        return
    if args.bare_proxy:
        _bare_proxy(args.port, args.upstream)
        return
    OUT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=OUT))
    fake_port = _free_port()
    fake = _start(
        [sys.executable, "-m", "corral.testing.fake_upstream", "--port", str(fake_port), "--no-record"],
        log=OUT / "fake.log",
    )
    upstream = f"http://127.0.0.1:{fake_port}/v1"
    _wait_http(f"http://127.0.0.1:{fake_port}/health")
    levels = (1, 32)
    results: dict[str, dict[int, dict[str, float]]] = {}
    try:
        results["upstream (direct)"] = {
            c: _cell(upstream + "/chat/completions", "x", "fake-model", c, args) for c in levels
        }
        port = _free_port()
        bare = _start([sys.executable, __file__, "--bare-proxy", "--port", str(port), "--upstream", upstream])
        _wait_http(f"http://127.0.0.1:{port}/health", timeout_s=30)
        results["bare aiohttp proxy"] = {
            c: _cell(f"http://127.0.0.1:{port}/v1/chat/completions", "x", "fake-model", c, args)
            for c in levels
        }
        _stop(bare)
        gw, url, key, db = _corral(work, upstream)
        results["corral gateway"] = {c: _cell(url, key, "bench", c, args) for c in levels}
        _stop(gw)  # SIGTERM: drains and flushes the trace writer
        answered = sum(int(r["answered"]) for r in results["corral gateway"].values())
        with sqlite3.connect(db) as conn:
            traced = conn.execute("SELECT COUNT(*) FROM traces WHERE status = 200").fetchone()[0]
        if args.guard:
            answered_g, traced_g = _guard_rows(results, work, upstream, levels, args)
            answered, traced = answered + answered_g, traced + traced_g
        if not args.skip_litellm:
            lp, lurl, lkey = _litellm(work, upstream)
            results["LiteLLM proxy"] = {c: _cell(lurl, lkey, "bench", c, args) for c in levels}
            _stop(lp)
    finally:
        _stop(fake)
    _print(results, answered, traced, args.duration, args.runs)


def _guard_rows(
    results: dict[str, dict[int, dict[str, float]]],
    work: Path,
    upstream: str,
    levels: tuple[int, ...],
    args: argparse.Namespace,
) -> tuple[int, int]:
    """The --guard rows: 1 KB PII prompts to the upstream, the bare proxy and corral with the default policy."""
    results["upstream (direct)" + PII] = {
        c: _cell(upstream + "/chat/completions", "x", "fake-model", c, args, pii=True) for c in levels
    }
    port = _free_port()
    bare = _start([sys.executable, __file__, "--bare-proxy", "--port", str(port), "--upstream", upstream])
    _wait_http(f"http://127.0.0.1:{port}/health", timeout_s=30)
    results["bare aiohttp proxy" + PII] = {
        c: _cell(f"http://127.0.0.1:{port}/v1/chat/completions", "x", "fake-model", c, args, pii=True)
        for c in levels
    }
    _stop(bare)
    gw, url, key, db = _corral(work / "guard", upstream, guard=True)
    name = "corral gateway + default guard policy" + PII
    results[name] = {c: _cell(url, key, "bench", c, args, pii=True) for c in levels}
    _stop(gw)
    with sqlite3.connect(db) as conn:
        traced = conn.execute("SELECT COUNT(*) FROM traces WHERE status = 200").fetchone()[0]
        redacted = conn.execute("SELECT COUNT(*) FROM traces WHERE meta LIKE '%\"redact\"%'").fetchone()[0]
    print(f"guard: {redacted} of {traced} traced requests had PII redacted", flush=True)
    return sum(int(r["answered"]) for r in results[name].values()), int(traced)


def _print(
    results: dict[str, dict[int, dict[str, float]]], answered: int, traced: int, duration: float, runs: int
) -> None:
    direct = results["upstream (direct)"]
    header = ["target", "concurrency", "RPS", "p50 ms", "p99 ms", "added p50 ms", "errors"]
    rows = [_row(name, c, r, results) for name, by_c in results.items() for c, r in by_c.items()]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    print(
        f"\nclosed loop, {duration:g} s per cell, median of {runs} run(s), {os.cpu_count()} CPU cores, "
        "non-streaming chat completions"
    )
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")
    ours = results["corral gateway"][32]["rps"]
    print(
        f"\ncorral / bare aiohttp proxy at c=32: {ours / results['bare aiohttp proxy'][32]['rps']:.2f}x (target >= 0.65x)"
    )
    if "LiteLLM proxy" in results:
        print(
            f"corral / LiteLLM at c=32: {ours / max(results['LiteLLM proxy'][32]['rps'], 1e-9):.1f}x (target >= 20x)"
        )
    bare = results["bare aiohttp proxy"]
    for c in (1, 32):
        ratio = results["corral gateway"][c]["p99_ms"] / max(bare[c]["p99_ms"], 1e-9)
        print(f"corral p99 / bare aiohttp proxy p99 at c={c}: {ratio:.2f}x (target <= 2x)")
    guarded = next((name for name in results if name.startswith("corral gateway + ")), None)
    if guarded is not None:
        ratio = results[guarded][32]["rps"] / max(results["bare aiohttp proxy" + PII][32]["rps"], 1e-9)
        print(
            f"corral + default guard / bare aiohttp proxy at c=32, 1 KB PII prompts: {ratio:.2f}x (target >= 0.5x)"
        )
    added = results["corral gateway"][1]["p50_ms"] - direct[1]["p50_ms"]
    print(f"corral added p50 at c=1: {added:.2f} ms (target <= 1.5 ms)")
    print(
        f"corral requests answered: {answered}, traces stored: {traced} ({'all traced' if traced >= answered else 'MISSING TRACES'})"
    )


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of measurement per cell")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=3, help="runs per cell; the table shows their median")
    p.add_argument("--skip-litellm", action="store_true")
    p.add_argument(
        "--guard", action="store_true", help="add rows with 1 KB PII prompts and the default guard policy"
    )
    p.add_argument("--pii-prompts", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--load", help=argparse.SUPPRESS)
    p.add_argument("--key", default="x", help=argparse.SUPPRESS)
    p.add_argument("--model", default="bench", help=argparse.SUPPRESS)
    p.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--bare-proxy", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    main()
