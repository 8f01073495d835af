"""docker-compose.yml, read as a user's `docker compose up` would use it (there is no container
engine here): build contexts, mounted files and commands exist in the repository and parse,
the services depend on each other in a sound order, and Prometheus scrapes the apps' ports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from monitoring import GRAFANA_DIR, PROMETHEUS_DIR, ROOT, promtool

from stream.app.cli import build_parser, load_pipeline

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict = COMPOSE["services"]
DASK = Path(sys.executable).with_name("dask")


def ours() -> dict[str, dict]:
    """Services built from the repository's Dockerfile."""
    return {name: svc for name, svc in SERVICES.items() if "build" in svc}


def runs(tool: str) -> dict[str, list[str]]:
    """Our services whose command starts with `tool` ("stream" or "dask"), with the command."""
    return {name: svc["command"] for name, svc in ours().items() if svc["command"][0] == tool}


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_compose_kafka_is_the_version_the_suite_runs_on():
    from stream.app.kafka_broker import VERSION

    assert SERVICES["kafka"]["image"] == f"apache/kafka:{VERSION}"


def test_the_stack_has_every_service_the_issue_names():
    assert {"kafka", "schema-registry", "dask-scheduler", "prometheus", "grafana", "loadgen"} <= set(SERVICES)
    workers = {n: c for n, c in runs("dask").items() if c[1] == "worker"}
    assert len(workers) == 2
    apps = {n: c for n, c in runs("stream").items() if c[1] == "run"}
    assert len(apps) == 2
    assert len({option(c, "--app-id") for c in apps.values()}) == 1  # one application ...
    assert len({option(c, "--replica") for c in apps.values()}) == 2  # ... two replicas


def test_build_contexts_and_the_files_the_dockerfile_copies_exist():
    assert ours()
    for name, svc in ours().items():
        context = ROOT / svc["build"] if isinstance(svc["build"], str) else ROOT / svc["build"]["context"]
        dockerfile = context / "Dockerfile"
        assert dockerfile.is_file(), f"{name}: no Dockerfile in {context}"
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for src in line.split()[1:-1]:
                    assert (context / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
        extras = re.findall(r'pip install "\.\[(\w+)\]"', dockerfile.read_text())
        pyproject = (ROOT / "pyproject.toml").read_text()
        assert extras and all(f"\n{e} = [" in pyproject for e in extras)


def test_mounted_files_exist():
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("."):
                assert (ROOT / host).exists(), f"{name} mounts {host}, which is not in the repository"


def test_stream_commands_parse_and_their_pipelines_load():
    for name, command in runs("stream").items():
        args = build_parser().parse_args(command[1:])  # exits (fails the test) on a bad option
        if command[1] == "run":
            pipeline = load_pipeline(args.pipeline)
            assert args.scheduler == f"tcp://dask-scheduler:{option(runs('dask')['dask-scheduler'], '--port')}"
            assert args.metrics_addr == "0.0.0.0", f"{name}: Prometheus could not reach a loopback endpoint"
            loadgen = build_parser().parse_args(SERVICES["loadgen"]["command"][1:])
            assert loadgen.topic in pipeline.source_spec.topics
        assert args.bootstrap == "kafka:9092"
        assert "PLAINTEXT://kafka:9092" in SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]


def test_dask_commands_use_options_the_installed_dask_has():
    for name, command in runs("dask").items():
        help_text = subprocess.run([str(DASK), command[1], "--help"], capture_output=True, text=True,
                                   timeout=60).stdout
        for word in command[2:]:
            if word.startswith("--"):
                assert word in help_text, f"{name}: `dask {command[1]}` has no option {word}"
        if command[1] == "worker":
            assert command[2] == "tcp://dask-scheduler:8786"


def test_start_order_waits_on_health_checks_without_cycles():
    for name, svc in SERVICES.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep} to be healthy, which has no health check"
    seen: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join(path + (name,))}"
        for dep in SERVICES[name].get("depends_on") or {}:
            visit(dep, path + (name,))
        seen.add(name)
    for name in SERVICES:
        visit(name, ())
    for name, command in runs("stream").items():
        if command[1] == "run":
            assert {"kafka", "dask-scheduler"} <= set(SERVICES[name]["depends_on"])
            assert "healthz" in " ".join(SERVICES[name]["healthcheck"]["test"])


def test_prometheus_scrapes_the_apps_metrics_ports_and_promtool_accepts_the_mounted_configs():
    apps = {n: c for n, c in runs("stream").items() if c[1] == "run"}
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{n}:{option(c, '--metrics-port')}" for n, c in apps.items()}
    host = yaml.safe_load((PROMETHEUS_DIR / "prometheus.host.yml").read_text())
    default_port = build_parser().parse_args(["run", "m:p"]).metrics_port
    assert [t for job in host["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]] == [
        f"host.docker.internal:{default_port}"]
    prom = SERVICES["prometheus"]
    mounted = {Path(v.split(":")[1]).name: v.split(":")[0] for v in prom["volumes"]}
    for name in ("prometheus.yml", "prometheus.host.yml"):
        assert name in mounted
        cfg = yaml.safe_load((ROOT / mounted[name]).read_text())
        assert all(f in mounted for f in cfg["rule_files"])
        out = promtool("check", "config", name, cwd=(ROOT / mounted[name]).parent)
        assert out.returncode == 0, out.stdout + out.stderr
    assert "--config.file=/etc/prometheus/${PROMETHEUS_CONFIG:-prometheus.yml}" in prom["command"]


def test_grafana_provisioning_points_at_prometheus_and_the_mounted_dashboards():
    services = SERVICES
    ds = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    port = services["prometheus"]["ports"][0].split(":")[-1]
    assert ds["datasources"][0]["url"] == f"http://prometheus:{port}"
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "stream.yml").read_text())
    dash_mount = next(v for v in services["grafana"]["volumes"] if "dashboards" in v.split(":")[0])
    assert dash_mount.split(":")[1] == provider["providers"][0]["options"]["path"]


DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_every_service_restarts_unless_stopped():
    assert {name for name, svc in SERVICES.items() if svc.get("restart") != "unless-stopped"} == set()


def test_ports_are_published_on_loopback_unless_a_variable_says_otherwise():
    for name, svc in SERVICES.items():
        for port in svc.get("ports", []):
            assert port.startswith("${STREAM_BIND:-127.0.0.1}:"), f"{name} publishes {port} on every interface"


def test_kafka_prometheus_and_grafana_keep_their_data_in_named_volumes():
    named = set(COMPOSE.get("volumes") or {})
    for name, path in (("kafka", "/var/lib/kafka/data"), ("prometheus", "/prometheus"),
                       ("grafana", "/var/lib/grafana")):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES[name]["volumes"]}
        assert mounts.get(path) in named, f"{name}: {path} is not a named volume"
    assert SERVICES["kafka"]["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"


def test_no_password_is_written_into_the_stack():
    grafana = SERVICES["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert "admin/admin" not in (ROOT / "docker-compose.yml").read_text()


def test_the_image_pins_its_base_runs_unprivileged_and_can_serve_the_dask_dashboard():
    base = re.search(r"^FROM (\S+)", DOCKERFILE, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base  # a patch release and a named Debian
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "bokeh" in DOCKERFILE  # the dashboard the scheduler's --dashboard-address serves needs it
