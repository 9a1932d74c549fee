"""A picture of the workflow's rule graph for the report.

``rulegraph_dot`` asks Snakemake itself for the graph (``--rulegraph``), so the picture always matches
the Snakefile that ran. ``render_dag`` draws it with Graphviz when the ``dot`` program is installed
(SVG) and otherwise with matplotlib (PNG), so a report can be built on a machine without Graphviz.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

Engine = Literal["auto", "graphviz", "matplotlib"]

_TAIL = 3000  # characters of Snakemake's stderr quoted in an error
_ATTRIBUTE_IDS = {"graph", "node", "edge"}
_ID = r'(?:"(?:[^"\\]|\\.)*"|[\w.]+)'
_NODE = re.compile(rf"^\s*(?P<id>{_ID})\s*\[(?P<attrs>.*)\]\s*;?\s*$")
_EDGE = re.compile(rf"^\s*{_ID}\s*->\s*{_ID}(?:\s*->\s*{_ID})*")
_LABEL = re.compile(r'label\s*=\s*"(?P<label>(?:[^"\\]|\\.)*)"')


def rulegraph_dot(snakefile: Path, workdir: Path, config: dict, *, timeout: float = 600.0) -> str:
    """The workflow's rule graph in Graphviz dot, from ``snakemake --rulegraph``.

    Runs the current interpreter's Snakemake on ``snakefile`` in ``workdir`` with ``config`` (dumped to a
    temporary JSON file and given as ``--configfile``, so it overlays the Snakefile's own configfile).
    ``--nolock`` makes this safe from inside a running job of the same workflow: it reads the DAG and
    writes nothing. Raises RuntimeError with the tail of Snakemake's stderr when that fails.
    """
    snakefile = Path(snakefile).resolve()
    workdir = Path(workdir).resolve()
    if not snakefile.is_file():
        raise FileNotFoundError(f"rule graph: no Snakefile at {snakefile}")
    handle, config_path = tempfile.mkstemp(prefix="mammoflow-rulegraph-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(config, stream, default=str)  # Paths and the like become strings
        command = [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(snakefile),
            "--directory",
            str(workdir),
            "--rulegraph",
            "--nolock",
            "--configfile",
            config_path,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"snakemake --rulegraph took longer than {timeout:.0f} s: {error}") from None
    finally:
        Path(config_path).unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"snakemake --rulegraph failed (exit {done.returncode}) for {snakefile} in {workdir}:\n"
            + _tail(done.stderr or done.stdout)
        )
    start = done.stdout.find("digraph")
    end = done.stdout.rfind("}")
    if start < 0 or end < start:
        raise RuntimeError(
            f"snakemake --rulegraph printed no graph for {snakefile} in {workdir}:\n" + _tail(done.stderr)
        )
    return done.stdout[start : end + 1] + "\n"


def _tail(text: str) -> str:
    text = (text or "").strip()
    return text if len(text) <= _TAIL else "…" + text[-_TAIL:]


def _unquote(identifier: str) -> str:
    if len(identifier) >= 2 and identifier[0] == identifier[-1] == '"':
        return identifier[1:-1].replace('\\"', '"')
    return identifier


def parse_dot(dot: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Nodes and edges of a Snakemake dot graph: ({node id: rule name}, [(from id, to id), ...]).

    Understands what ``--rulegraph`` and ``--dag`` print (one statement a line). A label's first line is
    the rule name (``--dag`` adds the wildcards on further lines), so ``Counter(nodes.values())`` of a
    ``--dag`` graph counts jobs per rule. Edges keep their order, without duplicates; an edge to a node
    that has no statement of its own gives that node its id as label.
    """
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    for line in dot.splitlines():
        line = line.strip()
        if not line or line.startswith(("digraph", "graph ", "//", "#", "}", "{")):
            continue
        if "->" in line and _EDGE.match(line):
            chain = re.findall(_ID, line.split("[", 1)[0])
            ids = [_unquote(part) for part in chain]
            for source, target in itertools.pairwise(ids):
                if (source, target) not in edges:
                    edges.append((source, target))
            continue
        node = _NODE.match(line)
        if node:
            identifier = _unquote(node.group("id"))
            if identifier in _ATTRIBUTE_IDS:
                continue
            label = _LABEL.search(node.group("attrs"))
            text = label.group("label") if label else identifier
            nodes[identifier] = text.replace("\\n", "\n").replace('\\"', '"').split("\n", 1)[0].strip()
    for edge in edges:
        for identifier in edge:
            nodes.setdefault(identifier, identifier)
    return nodes, edges


def _box_label(rule: str, counts: dict[str, int] | None) -> str:
    if counts and rule in counts:
        return f"{rule} ×{counts[rule]}"
    return rule


def render_dag(dot: str, counts: dict[str, int] | None = None, engine: Engine = "auto") -> tuple[bytes, str]:
    """The rule graph as an image: (bytes, MIME type).

    ``engine="auto"`` uses Graphviz when the ``dot`` program is on PATH (``image/svg+xml``, without the
    XML prolog and doctype so it can be inlined) and matplotlib otherwise (``image/png``: layers by
    longest path from the sources, boxes, arrows). ``counts`` (rule -> jobs) adds "rule ×n" to the boxes.
    ``engine="graphviz"`` fails when Graphviz cannot draw; "auto" then falls back to matplotlib.
    """
    if engine not in ("auto", "graphviz", "matplotlib"):
        raise ValueError(f"render_dag: engine must be auto, graphviz or matplotlib, not {engine!r}")
    if engine in ("auto", "graphviz"):
        executable = shutil.which("dot")
        if executable is None:
            if engine == "graphviz":
                raise RuntimeError("render_dag: Graphviz's dot program is not on PATH")
        else:
            try:
                return _graphviz_svg(executable, _relabel(dot, counts)), "image/svg+xml"
            except RuntimeError:
                if engine == "graphviz":
                    raise
    return _matplotlib_png(dot, counts), "image/png"


def _relabel(dot: str, counts: dict[str, int] | None) -> str:
    """The dot text with "rule ×n" labels (only node statements are touched)."""
    if not counts:
        return dot
    lines = []
    for line in dot.splitlines():
        node = _NODE.match(line)
        if node and _unquote(node.group("id")) not in _ATTRIBUTE_IDS:
            label = _LABEL.search(line)
            if label:
                rule = label.group("label").replace("\\n", "\n").split("\n", 1)[0]
                if rule in counts:
                    new = _box_label(rule, counts).replace('"', '\\"')
                    rest = label.group("label")[len(rule) :] if label.group("label").startswith(rule) else ""
                    line = line[: label.start("label")] + new + rest + line[label.end("label") :]
        lines.append(line)
    return "\n".join(lines) + "\n"


def _graphviz_svg(executable: str, dot: str) -> bytes:
    try:
        done = subprocess.run(
            [executable, "-Tsvg"], input=dot.encode("utf-8"), capture_output=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(f"Graphviz dot could not run: {error}") from None
    svg = done.stdout.decode("utf-8", errors="replace")
    start = svg.find("<svg")
    if done.returncode != 0 or start < 0:
        raise RuntimeError(
            f"Graphviz dot failed (exit {done.returncode}): {_tail(done.stderr.decode(errors='replace'))}"
        )
    return svg[start:].encode("utf-8")


# ----------------------------------------------------------------------------------- matplotlib fallback
def layers(nodes: dict[str, str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Layer of each node: the longest path to it from a source (self-loops ignored; a node left in a
    cycle goes one layer below everything else rather than failing)."""
    predecessors: dict[str, set[str]] = {n: set() for n in nodes}
    successors: dict[str, set[str]] = {n: set() for n in nodes}
    for source, target in edges:
        if source != target:
            predecessors[target].add(source)
            successors[source].add(target)
    waiting = {n: len(p) for n, p in predecessors.items()}
    ready = [n for n in nodes if waiting[n] == 0]
    layer: dict[str, int] = {}
    while ready:
        node = ready.pop(0)
        layer[node] = max((layer[p] + 1 for p in predecessors[node]), default=0)
        for nxt in successors[node]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    below = max(layer.values(), default=-1) + 1
    for node in nodes:
        layer.setdefault(node, below)
    return layer


def _order(layer: dict[str, int], edges: list[tuple[str, str]], sweeps: int = 6) -> list[list[str]]:
    """Nodes per layer, ordered by the barycentre of their neighbours to cut edge crossings."""
    rows: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for node in layer:  # first-seen order: Snakemake lists rules roughly in workflow order
        rows[layer[node]].append(node)
    up: dict[str, list[str]] = {n: [] for n in layer}
    down: dict[str, list[str]] = {n: [] for n in layer}
    for source, target in edges:
        if source != target:
            down[source].append(target)
            up[target].append(source)
    for sweep in range(sweeps):
        position = {n: float(i) for row in rows for i, n in enumerate(row)}
        downward = sweep % 2 == 0
        for r in range(1, len(rows)) if downward else range(len(rows) - 2, -1, -1):
            fixed = up if downward else down

            def centre(n: str, fixed=fixed, position=position) -> float:
                values = [position[m] for m in fixed[n]]
                return sum(values) / len(values) if values else position[n]

            rows[r].sort(key=centre)
            position.update({n: float(i) for i, n in enumerate(rows[r])})
    return rows


def _with_waypoints(
    nodes: dict[str, str], edges: list[tuple[str, str]], layer: dict[str, int]
) -> tuple[dict[str, int], list[tuple[str, str]], dict[tuple[str, str], list[str]]]:
    """Edges that skip layers become chains through invisible waypoints, one per layer crossed, so
    the layout keeps them clear of the boxes in between (the usual layered-drawing trick)."""
    layer = dict(layer)
    short: list[tuple[str, str]] = []
    chains: dict[tuple[str, str], list[str]] = {}
    for source, target in edges:
        if source == target or layer[target] - layer[source] <= 1:
            short.append((source, target))
            continue
        chain = [source]
        for r in range(layer[source] + 1, layer[target]):
            waypoint = f"\0{source}->{target}@{r}"
            layer[waypoint] = r
            chain.append(waypoint)
        chain.append(target)
        short.extend(itertools.pairwise(chain))
        chains[(source, target)] = chain
    return layer, short, chains


def _x_positions(rows: list[list[str]], widths: dict[str, float], edges, gap: float) -> dict[str, float]:
    """Horizontal centres: each node pulled towards its neighbours' mean, rows kept in order and apart."""
    neighbours: dict[str, list[str]] = {n: [] for row in rows for n in row}
    for source, target in edges:
        if source != target:
            neighbours[source].append(target)
            neighbours[target].append(source)
    x: dict[str, float] = {}
    for row in rows:
        total = sum(widths[n] for n in row) + gap * (len(row) - 1)
        left = -total / 2
        for n in row:
            x[n] = left + widths[n] / 2
            left += widths[n] + gap
    for _ in range(12):
        for row in rows:
            wanted = [
                sum(x[m] for m in neighbours[n]) / len(neighbours[n]) if neighbours[n] else x[n] for n in row
            ]
            # Left to right then right to left: the smallest moves that keep the order and the spacing.
            placed = list(wanted)
            for i in range(1, len(row)):
                least = placed[i - 1] + (widths[row[i - 1]] + widths[row[i]]) / 2 + gap
                placed[i] = max(placed[i], least)
            shift = (sum(placed) - sum(wanted)) / len(row)
            placed = [p - shift for p in placed]
            for i in range(len(row) - 2, -1, -1):
                most = placed[i + 1] - (widths[row[i + 1]] + widths[row[i]]) / 2 - gap
                placed[i] = min(placed[i], most)
            x.update(zip(row, placed, strict=True))
    return x


def _smooth(points: list[tuple[float, float]], path_class):
    """A downward polyline as cubic Bézier pieces that leave and enter each point vertically."""
    vertices = [points[0]]
    codes = [path_class.MOVETO]
    for (xa, ya), (xb, yb) in itertools.pairwise(points):
        bend = (ya - yb) / 2
        vertices += [(xa, ya - bend), (xb, yb + bend), (xb, yb)]
        codes += [path_class.CURVE4] * 3
    return path_class(vertices, codes)


def _matplotlib_png(dot: str, counts: dict[str, int] | None) -> bytes:
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path as MplPath

    from mammoflow.report.figures import PALETTE, _message_figure, _png

    nodes, edges = parse_dot(dot)
    if not nodes:
        return _message_figure("workflow", "the rule graph is empty")
    labels = {n: _box_label(rule, counts) for n, rule in nodes.items()}
    layer, short_edges, chains = _with_waypoints(nodes, edges, layers(nodes, edges))
    rows = _order(layer, short_edges)

    # Geometry in inches (1 data unit = 1 inch), so text and boxes keep their size whatever the graph.
    fontsize = 10.0
    char = 0.085  # average glyph width of DejaVu Sans at 10 pt, inches
    height, row_gap, gap, margin = 0.42, 0.55, 0.3, 0.35
    widths = {n: (max(0.9, len(labels[n]) * char + 0.35) if n in nodes else 0.12) for n in layer}
    x = _x_positions(rows, widths, short_edges, gap)
    lo = min(x[n] - widths[n] / 2 for n in x)
    hi = max(x[n] + widths[n] / 2 for n in x)
    fig_width = max(6.0, hi - lo + 2 * margin)
    offset = (fig_width - (hi - lo)) / 2 - lo
    fig_height = len(rows) * height + (len(rows) - 1) * row_gap + 2 * margin
    scale = min(1.0, 14.0 / fig_width, 16.0 / fig_height)  # huge graphs shrink instead of growing
    centres = {}
    for r, row in enumerate(rows):
        y = fig_height - margin - height / 2 - r * (height + row_gap)
        for n in row:
            centres[n] = (x[n] + offset, y)

    fig = Figure(figsize=(fig_width * scale, fig_height * scale))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, fig_width)
    ax.set_ylim(0, fig_height)
    ax.axis("off")

    for source, target in edges:
        (x0, y0), (x1, y1) = centres[source], centres[target]
        if source == target:  # a rule that feeds itself (a GAN stage starts from the previous stage)
            half = widths[source] / 2
            arrow = {"posA": (x0 + half, y0 + height / 4), "posB": (x0 + half, y0 - height / 4)}
            arrow["connectionstyle"] = "arc3,rad=-1.6"
        else:
            points = [(x0, y0 - height / 2)]
            for waypoint in chains.get((source, target), [])[1:-1]:
                wx, wy = centres[waypoint]
                points += [(wx, wy + height / 2), (wx, wy - height / 2)]
            points.append((x1, y1 + height / 2))
            arrow = {"path": _smooth(points, MplPath)}
        ax.add_patch(
            FancyArrowPatch(
                **arrow,
                arrowstyle="-|>",
                mutation_scale=12 * scale,
                linewidth=1.2 * scale,
                color="#808080",
                shrinkA=0,
                shrinkB=1,
                joinstyle="round",
                zorder=1,
            )
        )
    rules = sorted(set(nodes.values()))
    colours = [c for c in PALETTE if c != "#F0E442"]  # yellow is too faint for a thin box edge
    for node in nodes:
        cx, cy = centres[node]
        w = widths[node]
        ax.add_patch(
            FancyBboxPatch(
                (cx - w / 2, cy - height / 2),
                w,
                height,
                boxstyle="round,pad=0,rounding_size=0.08",
                facecolor="white",
                edgecolor=colours[rules.index(nodes[node]) % len(colours)],
                linewidth=2 * scale,
                zorder=2,
            )
        )
        ax.text(cx, cy, labels[node], ha="center", va="center", fontsize=fontsize * scale, zorder=3)
    return _png(fig)
