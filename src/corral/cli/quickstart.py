"""`corral quickstart`: the whole platform in one command, as far as it is built."""

from __future__ import annotations

import importlib.resources
import json
import shutil
from pathlib import Path

from rich.rule import Rule

from corral.cli.common import console, registry, settings
from corral.cli.init import init
from corral.cli.models import print_history
from corral.config import corral_home
from corral.data import read_jsonl
from corral.errors import NotFoundError
from corral.registry import Registry


def _demo_model_dir(root: Path, revision: int) -> Path:
    """The starter model's files with a revision mark, standing in for two trained versions in the demo."""
    path = root / f"demo-model-v{revision}"
    starter = Path(str(importlib.resources.files("corral.data") / "starter" / "model"))
    shutil.copytree(starter, path, dirs_exist_ok=True)
    config = json.loads((starter / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "corral_demo_revision": revision}, indent=2))
    (path / "README.md").write_text(f"corral quickstart demo model, revision {revision}\n")
    return path


def registry_demo(reg: Registry) -> None:
    console.print(Rule("1. registry: versions, aliases, rollback"))
    try:
        earlier = reg.models.versions("demo")
    except NotFoundError:
        earlier = []
    if earlier:  # a re-run: show what the first run made instead of making demo@3, demo@4, ...
        production = reg.models.resolve("demo@production")
        console.print(
            f"demo has {len(earlier)} version(s) from an earlier quickstart; demo@production → {production.version}"
        )
        print_history("demo@production history", reg.models.alias_history("demo", "production")[-3:], False)
        return
    root = corral_home() / "quickstart"
    v1 = reg.models.register(
        "demo", _demo_model_dir(root, 1), description="quickstart demo", tags={"demo": "1"}
    )
    console.print(f"registered {v1.ref}")
    reg.models.set_alias("demo", "production", v1.version, reason="quickstart: first release")
    console.print(f"demo@production → {v1.version}")

    data_file = Path(str(importlib.resources.files("corral.data") / "demo" / "support_demo.jsonl"))
    dataset = reg.datasets.register(
        "support-demo", read_jsonl(data_file), lineage={"source": "corral demo data"}
    )
    state = "imported" if dataset.created else "already registered as"
    console.print(f"{state} dataset {dataset.ref} ({dataset.row_count} rows, {dataset.schema_kind})")

    v2 = reg.models.register(
        "demo",
        _demo_model_dir(root, 2),
        description="quickstart demo, retrained",
        lineage={"parent": v1.ref, "dataset": dataset.ref},
    )
    reg.models.set_alias("demo", "production", v2.version, reason="quickstart: promote retrained version")
    console.print(f"registered {v2.ref} and promoted it: demo@production → {v2.version}")
    back = reg.models.rollback("demo", "production", reason="quickstart: roll back")
    console.print(f"rolled back: demo@production → {back.version}")
    print_history("demo@production history", reg.models.alias_history("demo", "production")[-3:], False)


def starter_demo(reg: Registry) -> tuple[str | None, list[tuple[str, str | None]] | None]:
    """Register the starter model (trained by corral on its own support-desk corpus) as production.

    Returns its reference and a few known-intent test questions with their expected answers, or
    (None, None) when the `train` extra (torch) is not installed.
    """
    console.print(Rule("2. the starter model"))
    try:
        from corral.train.starter import KNOWN_FILE, ensure_starter_model, rows
    except ImportError:
        console.print("(install the `train` extra to get the starter model; serving a fake endpoint instead)")
        return None, None
    version = ensure_starter_model(reg, console)
    console.print(
        f"{version.ref} is production ({version.lineage.get('dataset', '')}; metrics {version.metrics})"
    )
    questions: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for row in rows(KNOWN_FILE, split="test"):
        if row.get("intent") in seen:
            continue
        seen.add(row.get("intent", ""))
        questions.append((row["messages"][0]["content"], row["messages"][-1]["content"]))
        if len(questions) == 4:
            break
    return f"{version.name}@production", questions


def quickstart() -> None:
    """Init, walk through the registry, then serve the starter model behind the gateway and trace it."""
    init()
    reg = registry()
    registry_demo(reg)
    model_ref, questions = starter_demo(reg)
    console.print(Rule("3. the gateway: serve, answer, trace"))
    from corral.cli.quickstart_gateway import serve_demo

    serve_demo(settings(), reg, console, model_ref=model_ref, questions=questions)
    console.print(Rule("done"))
    console.print(
        "next: `corral models show starter`, `corral datasets list`, `corral audit`, `corral serve`"
    )
