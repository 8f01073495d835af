"""The README and the pages under docs/ stay true: links resolve, commands parse, figures
come from the benchmark's JSON, and the README stays short."""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shlex
import statistics

import pytest

from stream.app.cli import build_parser

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path: pathlib.Path) -> set[str]:
    """GitHub's anchors for a page's headings."""
    found = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def code_lines(path: pathlib.Path) -> list[str]:
    """The lines inside the page's fenced code blocks."""
    out, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            out.append(line)
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(target)
        elif anchor and anchor not in anchors(dest):
            broken.append(target)
    assert broken == []


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def stream_commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for line in code_lines(page):
            line = line.split("  #")[0].strip().rstrip("\\").strip()
            m = re.match(r"(?:\S*/)?stream (.*)", line)
            if m:
                found.append((page.name, m.group(1)))
    return found


def test_the_pages_show_stream_commands():
    assert {sub.split()[0] for _, sub in stream_commands()} >= {"run", "demo", "tail", "broker", "replay",
                                                                "status", "reset"}


@pytest.mark.parametrize("page,command", stream_commands())
def test_every_stream_command_in_the_pages_parses(page, command):
    """A concrete command parses as written; a synopsis (with [...]) names only real options."""
    parsers = subcommands()
    name = command.split()[0]
    if re.match(r"\w+ \| ", command):  # a list of subcommands: each must exist
        assert all(part.strip() in parsers for part in command.split("...")[0].split("|")), command
        return
    if "[" in command or "MODULE:ATTR" in command:
        known = {s for a in parsers[name]._actions for s in a.option_strings}
        used = set(re.findall(r"--[a-z][a-z-]*", command))
        assert used - known == set(), f"{page}: {command}"
    else:
        build_parser().parse_args(shlex.split(command))


def test_every_make_target_in_the_pages_exists():
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    used = {m.group(1) for page in PAGES for line in code_lines(page)
            for m in [re.match(r"make ([a-z][\w-]*)", line.strip())] if m}
    assert used and used <= targets
    assert re.findall(r"`make ([a-z][\w-]*)", (ROOT / "README.md").read_text())
    assert set(re.findall(r"`make ([a-z][\w-]*)", (ROOT / "README.md").read_text())) <= targets


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_the_readme_figures_come_from_the_benchmark_json():
    res = json.loads((ROOT / "docs" / "bench-results.json").read_text())
    t, s, sc = res["throughput"], res["stateless"], res["scoring"]
    figures = {
        "exactly-once": (statistics.median(r["rps"] for r in t["exactly_once"]), statistics.median(t["baseline_rps"])),
        "stateless": (s["pipeline"]["rps"], s["baseline_rps"]),
        "scoring": (statistics.median(r["rps"] for r in sc["pipeline"]), sc["baseline_median_rps"]),
    }
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| ") and "rec/s" in line]
    assert len(rows) == len(figures)
    for (word, (pipeline, baseline)), row in zip(figures.items(), rows):
        assert word in row
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == f"{round(pipeline):,} rec/s"
        assert cells[2] == f"{round(baseline):,} rec/s"
        assert cells[3] == f"{pipeline / baseline:.2f}"
    p99 = res["latency"]["p99_s"]
    assert f"Latency p99 at half the maximum rate: {p99:.2f} s" in readme
    assert res["measured_at"][:10] in readme


def test_the_targets_table_comes_from_the_benchmark_json():
    import sys
    sys.path.insert(0, str(ROOT))
    from bench.targets import judge
    rows = judge(json.loads((ROOT / "docs" / "bench-results.json").read_text()))
    page = (ROOT / "docs" / "performance.md").read_text()
    for r in rows:
        value = "" if r["value"] is None else format(r["value"], "g")
        state = "not measured" if r["met"] is None else "met" if r["met"] else "missed"
        assert f"| {r['target']} | {value} | {r['goal']} | {state} |" in page
