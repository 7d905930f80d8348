"""`corral worker`: serve one model version (a directory or a registry reference) over the OpenAI API."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.cli import common
from corral.errors import CorralError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from corral.config import EngineSettings, Settings
    from corral.engine.lora import Finder


def resolve_model(arg: str, settings: Settings) -> tuple[Path, Path | None, list[str]]:
    """(model dir, adapter dir or None, names to answer to). A REF is resolved once and pinned."""
    path = Path(arg).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and (path / "adapter_config.json").is_file():
            raise InvalidInputError(
                f"{path} is a LoRA adapter; register it over its base and serve its registry reference"
            )
        return path, None, [arg]
    if path.exists() or "/" in arg or arg.startswith("."):
        raise NotFoundError(f"model directory {arg} does not exist (or is not a directory)")
    try:
        from corral.registry import open_registry
    except ImportError:
        raise NotFoundError(
            f"{arg} is not a directory, and the registry is not available to resolve it"
        ) from None
    reg = open_registry(settings)
    version = reg.models.resolve(arg)
    if version.kind == "endpoint":
        raise InvalidInputError(
            f"{version.ref} is a remote endpoint; route to {version.endpoint_url} instead"
        )
    if version.kind == "adapter":
        if not version.base_ref:
            raise InvalidInputError(f"{version.ref} is an adapter without a base version")
        base = reg.models.materialize(reg.models.resolve(version.base_ref))
        adapter = reg.models.materialize(version)
        return base, adapter, [version.ref, str(adapter)]
    model_dir = reg.models.materialize(version)
    return model_dir, None, [version.ref, str(model_dir)]


def adapter_finder(names: list[str], settings: Settings, dirs: dict[str, Path]) -> Finder:
    """How the worker finds a LoRA adapter a request names: `--lora NAME=DIR`, else the registry.

    A registry version qualifies when it is an adapter whose base is the version this worker
    serves (`names[0]`, a pinned `name@N`); it is materialized on its first request.
    """
    registry: list[Any] = []

    def find(name: str) -> tuple[str, Path] | None:
        if name in dirs:
            return name, dirs[name]
        if "@" not in names[0] or "/" in name:
            return None  # this worker serves a directory: only --lora adapters
        try:
            if not registry:
                from corral.registry import open_registry

                registry.append(open_registry(settings))
            version = registry[0].models.resolve(name)
        except (CorralError, ImportError):
            return None
        if version.kind != "adapter" or version.base_ref != names[0] or version.stage == "retired":
            return None
        return version.ref, registry[0].models.materialize(version)

    return find


def parse_loras(values: list[str]) -> dict[str, Path]:
    """`--lora NAME=DIR` options as {name: directory}; a bad one is a clear error."""
    out = {}
    for value in values:
        name, sep, directory = value.partition("=")
        path = Path(directory).expanduser()
        if not sep or not name or not (path / "adapter_config.json").is_file():
            raise InvalidInputError(f"--lora {value}: give NAME=DIR, DIR a PEFT LoRA adapter directory")
        out[name] = path
    return out


def engine_settings(base: EngineSettings, **overrides: object) -> EngineSettings:
    """The configured engine settings with the command-line options that were given, re-validated."""
    from pydantic import ValidationError

    from corral.config import EngineSettings

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return EngineSettings.model_validate({**base.model_dump(), **given})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidInputError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None


def worker(
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="HF-format directory, or a registry reference like support@production"
        ),
    ],
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="port (default: engine.worker_port_start)")] = None,
    kv_cache_gb: Annotated[float | None, typer.Option(help="memory for the KV cache, GiB")] = None,
    max_waiting: Annotated[int | None, typer.Option(help="queued requests before answering 503")] = None,
    max_num_seqs: Annotated[int | None, typer.Option(help="sequences in one batch")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16 or float16")] = None,
    lora: Annotated[
        list[str] | None,
        typer.Option(help="NAME=DIR: also serve this LoRA adapter, per request, over the base (repeatable)"),
    ] = None,
    embeddings: Annotated[bool, typer.Option("--embeddings", help="also serve /v1/embeddings")] = False,
    embeddings_model: Annotated[
        str | None, typer.Option(help="sentence-transformers directory for --embeddings")
    ] = None,
) -> None:
    """Serve one model version as an OpenAI-compatible worker (chat, completions, models, metrics)."""
    import uvicorn

    from corral.engine.async_engine import engine_thread
    from corral.engine.embeddings import EmbeddingModel
    from corral.engine.llm_engine import LLMEngine
    from corral.engine.server import Worker, build_app
    from corral.gateway.server import QuietServer

    settings = common.settings()
    engine_cfg = engine_settings(
        settings.engine,
        kv_cache_gb=kv_cache_gb,
        max_waiting=max_waiting,
        max_num_seqs=max_num_seqs,
        device=device,
        dtype=dtype,
    )
    model_dir, adapter, names = resolve_model(model, settings)
    # a worker for a base version also serves the adapters over it, chosen per request by `model`
    finder = adapter_finder(names, settings, parse_loras(lora or [])) if adapter is None else None
    # built on the thread that will step it (see corral.engine.async_engine.engine_thread)
    thread = engine_thread()
    engine = thread.submit(LLMEngine, model_dir, engine_cfg, adapter=adapter, adapters=finder).result()
    embedder = EmbeddingModel(embeddings_model) if embeddings else None
    app = build_app(Worker(engine, names, embedder, executor=thread))
    port = port or engine_cfg.worker_port_start
    common.console.print(
        f"serving [bold]{names[0]}[/bold] on http://{host}:{port}/v1 "
        f"({engine.block_manager.num_blocks} KV blocks, context {engine.max_model_len})"
    )
    # SIGTERM (a rollout, a scale-down) drains: no new connections, answers in flight finish (for at
    # most gateway.drain_timeout_s), then the worker exits 0
    drain_s = max(1, round(settings.gateway.drain_timeout_s))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=drain_s)
    QuietServer(config).run()


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
