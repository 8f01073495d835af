"""Two import rules: the pure core imports no I/O client, and imports point down the layers.

The layers, bottom to top (docs/architecture.md draws them): a module imports from its own
package and from lower layers only; the packages of one layer do not import each other. So a
source never reaches into the worker, the worker never into the driver, and nothing below
`app/` knows about the command line.
"""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

PURE = ["operators", "operators.aggregate", "operators.transform", "stream.records", "stream.pipeline",
        "stream.protocols", "stream.windows.specs", "stream.windows.eventtime", "stream.windows.store",
        "stream.windows.sessions", "stream.windows.counts", "stream.windows.merge", "stream.worker.rows",
        "stream.driver.checkpoint", "stream.driver.scheduler", "stream.driver.core", "stream.codecs.state",
        "stream.testing"]

LAYERS = [
    {"stream.errors", "stream.records", "stream.faults", "stream.status"},
    {"stream.secrets", "stream.protocols"},
    {"stream.config"},
    {"stream.codecs"},
    {"operators"},
    {"stream.windows"},
    {"stream.pipeline"},
    {"stream.sources", "stream.sinks", "stream.execution", "stream.worker", "stream.metrics"},
    {"stream.driver"},
    {"stream.app", "stream.testing"},
    {"stream", "stream.__main__"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def unit(module: str) -> str:
    """The package a module belongs to: `stream.driver.core` -> `stream.driver`."""
    parts = module.split(".")
    if parts[0] == "operators":
        return "operators"
    return ".".join(parts[:2])


def imports(path: pathlib.Path) -> set[str]:
    """The stream and operators modules a file imports (`from stream import faults` included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("stream", "operators"):
            if node.module == "stream":
                found.update(f"stream.{a.name}" for a in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in ("stream", "operators"))
    return found


def module_name(path: pathlib.Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_pure_core_imports_no_io_clients():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in PURE) +
            "bad = [m for m in ('confluent_kafka', 'distributed', 'prometheus_client') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_package_has_a_layer():
    units = {unit(module_name(p)) for d in ("stream", "operators") for p in (ROOT / d).rglob("*.py")}
    assert units - set(RANK) == set()


def test_imports_point_down_the_layers():
    wrong = []
    for d in ("stream", "operators"):
        for path in sorted((ROOT / d).rglob("*.py")):
            me = unit(module_name(path))
            for target in imports(path):
                them = unit(target)
                if them != me and RANK[them] >= RANK[me]:
                    wrong.append(f"{module_name(path)} imports {target} ({me} may use only lower layers)")
    assert wrong == []


def test_the_rule_catches_an_upward_import(tmp_path):
    bad = tmp_path / "task.py"
    bad.write_text("from stream.driver.core import DriverCore\nfrom stream import faults\n")
    assert imports(bad) == {"stream.driver.core", "stream.faults"}
    assert RANK[unit("stream.driver.core")] > RANK[unit("stream.worker.task")]
