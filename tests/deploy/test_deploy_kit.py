"""The deployment kit (deploy/): every file parses, the compose file and the Helm chart hold what
docs/deploy.md promises, and each command they run is a real corral command with real options.

What runs depends on the tools found here, and each check that cannot run skips naming the tool:
- the compose file against the Compose Specification's JSON schema (vendored beside this file:
  compose-spec/compose-spec at 170098ba, schema/compose-spec.json, Apache-2.0), always; and by
  `docker-compose config` or `docker compose config` when one is installed;
- the chart rendered by `helm template` when a helm binary is found (`CORRAL_TEST_HELM`, else
  `helm` on PATH, else the one `scripts/get-helm` fetched into build/helm; .ci/run fetches it), and
  every rendered manifest validated against the Kubernetes schemas that kubernetes-validate ships
  (the dev extra, so CI requires it). Without helm only the chart's static files (Chart.yaml,
  values.yaml) are checked: the templates are not rendered by anything else.
Building the image is not a test (minutes, and a container engine); docs/deploy.md says how.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.cli.test_docs_commands import corral_commands, parse
from tests.conftest import service_missing

from corral.cli.main import _register_commands, app
from corral.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "corral"
COMPOSE = DEPLOY / "compose.yaml"
# read at import: the autouse fixture clears CORRAL_* variables other than CORRAL_TEST_*
FETCHED_HELM = ROOT / "build" / "helm" / "helm"  # where scripts/get-helm puts it
HELM = (
    os.environ.get("CORRAL_TEST_HELM")
    or shutil.which("helm")
    or (str(FETCHED_HELM) if FETCHED_HELM.is_file() else None)
)
NEEDS_HELM = pytest.mark.skipif(
    HELM is None,
    reason="no helm binary (CORRAL_TEST_HELM, PATH, or scripts/get-helm): the chart is not rendered",
)
KUBERNETES_VERSIONS = ("1.25.0", "1.37.0")  # the chart's kubeVersion floor, and the newest schemas
SECRETS = [
    "--set",
    "secrets.adminKey=sk-test-admin",
    "--set",
    "secrets.databaseUrl=postgresql+psycopg://corral:pw@db:5432/corral",
]
FULL_VALUES = {
    "ingress": {"enabled": True, "className": "nginx", "tls": [{"secretName": "t", "hosts": ["a.b"]}]},
    "secrets": {"redisUrl": "redis://redis:6379/0", "extra": {"CORRAL_UPSTREAM_VLLM_KEY": "k"}},
    "env": {"CORRAL_ARTIFACTS_URL": "s3://bucket/corral"},
    "pipelines": {
        "schedules": [{"name": "nightly", "schedule": "0 3 * * *", "file": "refresh.yaml"}],
        "files": {"refresh.yaml": "name: refresh\n"},
    },
    "training": {"enabled": True, "spec": "output: starter\n", "nproc": 2, "set": ["max_steps=10"]},
}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def seconds(value: str) -> float:
    """A compose duration such as `45s`, `1m30s`."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts, f"not a duration: {value}"
    return sum(float(n) * units[u] for n, u in parts)


def command_line(command: list[str] | str) -> str:
    """A container command as one shell line; `sh -c SCRIPT` is the script itself."""
    if isinstance(command, str):
        return command
    if command[:2] == ["sh", "-c"]:  # redirections dropped; groups and loop keywords split like `;`
        script = re.sub(r"\s\d?>&\d|\s\d?>\s*\S+", "", command[2])
        return re.sub(r"[{}]|\b(?:until|while|do|done)\b", ";", script)
    return shlex.join(command)


def check_corral_commands(lines: list[str]) -> int:
    """Parse every corral command in the lines with today's CLI; the count parsed."""
    _register_commands()
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    count = 0
    for line in lines:
        for args in corral_commands(line):
            if args[0] == "pipeline" and "pipeline" not in names:
                continue  # `corral pipeline` is built in parallel (issue 14); checked once it is here
            parse(args)
            count += 1
    return count


# -- every file ------------------------------------------------------------------------------------


def test_every_yaml_and_json_file_of_the_kit_parses():
    templates = CHART / "templates"
    files = [p for p in DEPLOY.rglob("*.y*ml") if templates not in p.parents]
    assert {COMPOSE, DEPLOY / "corral.yaml", CHART / "Chart.yaml", CHART / "values.yaml"} <= set(files)
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path
    for path in DEPLOY.rglob("*.json"):
        json.loads(path.read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "corral"


def test_the_compose_corral_yaml_is_valid_corral_settings():
    settings = load_settings(DEPLOY / "corral.yaml", environ={})
    route = settings.deployments["support"].routes[0]
    worker = compose()["services"]["worker"]["command"]
    assert route.url == f"http://worker:{worker[worker.index('--port') + 1]}/v1"
    assert route.model == worker[worker.index("--model") + 1]  # a worker answers to its version's reference
    assert settings.monitor.dashboard


# -- the image -------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_with_a_health_check():
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", text, re.M)
    assert stages == ["build", "runtime"]
    assert "COPY --from=build /opt/corral/venv" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    health = re.search(r"^HEALTHCHECK .*?\n(?:.*\\\n)*.*$", text, re.M)
    assert health and "/health" in text[health.start() : health.end() + 300]
    install = re.search(r"^RUN pip install .*$", text, re.M)
    assert install and "-c constraints.txt" in install.group(0)
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/${VARIANT}" in text
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M)
    for source in re.findall(r"^COPY (?!--)(.+) \S+$", text, re.M):
        for name in source.split():
            assert (ROOT / name).exists(), f"the Dockerfile copies {name}, which is not in the repository"


def test_the_package_data_ships_every_non_python_file():
    """The image installs corral from a wheel, not editable: a file the package-data globs miss is
    absent there (the starter model's weights and the dashboard's CSS were, until an image was built)."""
    import tomllib

    package = ROOT / "src" / "corral"
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {p for pattern in patterns["corral"] for p in package.glob(pattern) if p.is_file()}
    data = {
        p
        for p in package.rglob("*")
        if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts
    }
    assert sorted(str(p.relative_to(package)) for p in data - shipped) == []


def test_dockerignore_keeps_what_the_image_needs_and_drops_the_rest():
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".corral", "tests"} <= patterns
    assert not patterns & {"src", "pyproject.toml", "constraints.txt", "README.md", "*"}


# -- compose ---------------------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification():
    import jsonschema

    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose())


def test_compose_migrates_before_the_gateway_and_checks_every_service():
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "bootstrap", "worker", "gateway"}
    assert services["migrate"]["command"] == ["corral", "db", "upgrade"]
    gateway = services["gateway"]
    assert gateway["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert gateway["depends_on"]["worker"] == {"condition": "service_healthy"}
    for name in ("postgres", "redis", "worker", "gateway"):
        assert services[name]["healthcheck"]["test"], name
    assert "/ready" in " ".join(gateway["healthcheck"]["test"])
    assert any(str(port).endswith(":8000") for port in gateway["ports"])  # the API and /dashboard
    assert {"postgres-data", "corral-data"} <= set(compose()["volumes"])
    drain = load_settings(DEPLOY / "corral.yaml", environ={}).gateway.drain_timeout_s
    assert seconds(gateway["stop_grace_period"]) > drain


def test_every_corral_command_in_the_compose_file_parses():
    lines = [command_line(s["command"]) for s in compose()["services"].values() if "command" in s]
    assert check_corral_commands(lines) >= 6  # db upgrade, show, register, alias set, worker, serve


def _compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def test_compose_config_accepts_the_file():
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    env = {**os.environ, "CORRAL_ADMIN_KEY": "sk-test-admin"}
    done = subprocess.run([*cli, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)
    assert rendered["services"]["gateway"]["environment"]["CORRAL_ADMIN_KEY"] == "sk-test-admin"
    env.pop("CORRAL_ADMIN_KEY")
    refused = subprocess.run([*cli, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=env)
    assert refused.returncode != 0 and "set CORRAL_ADMIN_KEY" in refused.stderr


# -- the Helm chart --------------------------------------------------------------------------------


def helm_template(tmp_path: Path, *args: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    extra = []
    if values is not None:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        extra = ["-f", str(path)]
    assert HELM is not None
    done = subprocess.run(
        [HELM, "template", "r", str(CHART), *SECRETS, *extra, *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def helm_refusal(*args: str) -> str:
    assert HELM is not None
    done = subprocess.run([HELM, "template", "r", str(CHART), *args], capture_output=True, text=True)
    assert done.returncode != 0
    return done.stderr


def find(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    if "template" not in spec:
        return []
    pod = spec["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def rendered_settings(docs: list[dict[str, Any]], tmp_path: Path):
    path = tmp_path / "rendered-corral.yaml"
    path.write_text(find(docs, "ConfigMap", "-config")["data"]["corral.yaml"])
    return load_settings(path, environ={})


@NEEDS_HELM
@pytest.mark.parametrize("full", [False, True], ids=["defaults", "every-option"])
def test_chart_renders_manifests_valid_for_kubernetes(tmp_path, full):
    try:
        import kubernetes_validate
    except ImportError:
        service_missing("kubernetes-validate is not installed (pip install -e '.[dev]')")
    docs = helm_template(tmp_path, values=FULL_VALUES if full else None)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler"} <= kinds
    assert {"PodDisruptionBudget", "Job", "PersistentVolumeClaim"} <= kinds
    if full:
        assert {"Ingress", "CronJob"} <= kinds
    for doc in docs:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


@NEEDS_HELM
def test_chart_config_is_valid_corral_settings_routed_to_the_worker_service(tmp_path):
    docs = helm_template(tmp_path)
    route = rendered_settings(docs, tmp_path).deployments["support"].routes[0]
    service = find(docs, "Service", "-worker")
    assert route.url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/v1"
    worker = containers(find(docs, "Deployment", "-worker"))[-1]
    assert route.model == worker["command"][worker["command"].index("--model") + 1] == "starter@1"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    pod = find(docs, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > int(worker["lifecycle"]["preStop"]["exec"]["command"][1])


@NEEDS_HELM
@pytest.mark.parametrize("drain", [None, 120, 90], ids=["default", "values", "config-file"])
def test_gateway_probes_and_a_grace_period_longer_than_the_drain(tmp_path, drain):
    args = [] if drain is None else ["--set", f"config.gateway.drain_timeout_s={drain}"]
    if drain == 90:  # a whole corral.yaml given with --set-file wins over the config map
        config = yaml.safe_load((DEPLOY / "corral.yaml").read_text())
        config["gateway"]["drain_timeout_s"] = 89.5  # a fraction counts as the next whole second
        (tmp_path / "corral.yaml").write_text(yaml.safe_dump(config))
        args = ["--set-file", f"configFile={tmp_path / 'corral.yaml'}"]
    docs = helm_template(tmp_path, *args)
    pod = find(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    gateway = pod["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/health"
    sleep = int(gateway["lifecycle"]["preStop"]["exec"]["command"][1])
    timeout = rendered_settings(docs, tmp_path).gateway.drain_timeout_s
    assert timeout == {None: 30, 120: 120, 90: 89.5}[drain]
    assert pod["terminationGracePeriodSeconds"] > sleep + timeout
    assert pod["securityContext"]["runAsNonRoot"] is True
    hpa = find(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == find(docs, "Deployment", "-gateway")["metadata"]["name"]


@NEEDS_HELM
def test_chart_migrates_as_a_hook_and_schedules_pipelines_and_training(tmp_path):
    docs = helm_template(tmp_path, values=FULL_VALUES)
    migrate = find(docs, "Job", "-migrate")
    assert migrate["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert containers(migrate)[0]["command"] == ["corral", "db", "upgrade"]
    hook_secret = find(docs, "Secret", "-migrate")  # the release's Secret does not exist yet then
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0
    cron = find(docs, "CronJob", "-nightly")
    command = containers(cron)[0]["command"]
    assert command == [
        "corral",
        "pipeline",
        "run",
        "/etc/corral-pipelines/refresh.yaml",
        "--trigger",
        "schedule",
    ]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    starter = containers(find(docs, "Job", "-starter-1"))[0]  # one per revision, idempotent
    assert "corral models show starter@production" in starter["command"][2]
    wait = containers(find(docs, "Deployment", "-worker"))[0]
    assert wait["name"] == "wait-for-model" and "starter@1" in wait["command"][2]
    train = containers(find(docs, "Job", "-train"))[0]
    assert train["command"][:6] == [
        "torchrun",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "corral.cli.main",
    ]
    assert train["resources"]["limits"]["nvidia.com/gpu"] == 1


@NEEDS_HELM
def test_every_corral_command_in_the_chart_parses(tmp_path):
    docs = helm_template(tmp_path, values=FULL_VALUES)
    lines = [command_line(c["command"]) for doc in docs for c in containers(doc) if "command" in c]
    assert len(lines) == 7  # gateway, worker and its wait, migrate, starter, a pipeline, training
    assert check_corral_commands(lines) >= 8  # `corral pipeline` only once it is in the tree


@NEEDS_HELM
def test_chart_refuses_missing_secrets_and_an_unpinned_worker_model():
    assert "secrets.adminKey is required" in helm_refusal()
    refused = helm_refusal(*SECRETS, "--set", "worker.model=starter@production")
    assert "give a pinned version such as starter@1" in refused
    unknown = helm_refusal(
        *SECRETS, "--set", "pipelines.schedules[0].name=x", "--set", "pipelines.schedules[0].file=no.yaml"
    )
    assert "is not a key of pipelines.files" in unknown


@NEEDS_HELM
def test_chart_passes_helm_lint_strict(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(FULL_VALUES))
    assert HELM is not None
    done = subprocess.run(
        [HELM, "lint", "--strict", str(CHART), *SECRETS, "-f", str(values)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
