"""No package imports one that imports it back, directly or through others.

The packages stack like this, bottom to top (a package may import those below it):

    model.kernels            the SIMD matvec extension (and model.errors, model.blas beside it)
    model.network            the transformer, with its config dataclass (model.network.config)
    model.cache              the KV cache, its settings and the state it reports
    model.loading            files, tokenizers, templates -> a built network
    model.internals          what the views need from a step, and the probes that read it
    model.distributed        the model split over ranks
    model.runtime            prefill and decode, turns, the engine thread and its events
    chat                     the Textual app and the headless commands (its `bench` command imports bench)
    bench                    beside chat: measures the model, never imports chat

Every module of model/, chat/ and bench/ is read with `ast`, so an import inside a
function or under `if TYPE_CHECKING:` counts as much as one at the top: a cycle
that only a type hint closes still ties the packages together.
"""

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "model.loading",
    "model.network",
    "model.cache",
    "model.runtime",
    "model.internals",
    "model.distributed",
    "model.kernels",
    "chat",
    "bench",
)


def package_of(module: str):
    """The package of PACKAGES that `module` belongs to, or None (the standard library, mlx, model.errors...)."""
    for name in PACKAGES:
        if module == name or module.startswith(name + "."):
            return name
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """Every module `path` imports (`from a import b` counts as both a and a.b), with the line."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from .x import y` inside package p is p.x
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            out.append((module, node.lineno))
            out += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return out


def package_edges() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) package pairs -> where each import is ("chat/x.py:12 imports model.y")."""
    edges = defaultdict(list)
    for top in ("model", "chat", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            source = package_of(module_name(path))
            for module, line in imported_modules(path):
                target = package_of(module)
                if source and target and target != source:
                    where = f"{path.relative_to(ROOT)}:{line} imports {module}"
                    if where not in edges[(source, target)]:
                        edges[(source, target)].append(where)
    return edges


def cycles(edges) -> list[tuple[list[str], list[str]]]:
    """Each group of packages tied by a cycle (Tarjan's strongly connected components), sorted, with one
    cycle through its first package as [a, b, ..., a]."""
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(sorted(group), _one_cycle(graph, group)) for group in groups]


def _one_cycle(graph, group: set[str]) -> list[str]:
    """A shortest way from the group's first package back to itself, inside the group (breadth first)."""
    start = min(group)
    came_from, frontier = {}, [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w in group and w not in came_from:
                    came_from[w] = v
                    following.append(w)
        if start in came_from:
            break
        frontier = following
    path, v = [start], came_from[start]
    while v != start:
        path.append(v)
        v = came_from[v]
    return [start] + path[1:][::-1] + [start] if len(path) > 1 else [start, start]


def describe(group: list[str], cycle: list[str], edges) -> str:
    lines = [f"{', '.join(group)} import each other; for one: " + " -> ".join(cycle)]
    for a, b in zip(cycle, cycle[1:]):
        sites = edges[(a, b)]
        lines.append(f"  {a} -> {b}: {sites[0]}" + (f" (and {len(sites) - 1} more)" if len(sites) > 1 else ""))
    return "\n".join(lines)


def test_every_package_is_found():
    """The walk sees the packages (a wrong root would find no edges and pass vacuously)."""
    found = {package_of(module_name(p)) for top in ("model", "chat", "bench") for p in (ROOT / top).rglob("*.py")}
    assert found - {None} == set(PACKAGES)
    edges = package_edges()
    assert ("chat", "model.runtime") in edges and ("model.cache", "model.network") in edges


def test_no_import_cycle_between_packages():
    edges = package_edges()
    found = cycles(edges)
    assert not found, f"{len(found)} import cycle(s) between packages:\n" + "\n".join(
        describe(g, c, edges) for g, c in found
    )


def test_a_cycle_is_named():
    """The finder itself: a made-up graph with two cycles yields both, each as a closed path."""
    edges = {("a", "b"): ["x"], ("b", "c"): ["x"], ("c", "a"): ["x"], ("c", "d"): ["x"], ("d", "e"): ["x"]}
    edges[("e", "d")] = ["x"]
    found = sorted(cycles(edges))
    assert found == [(["a", "b", "c"], ["a", "b", "c", "a"]), (["d", "e"], ["d", "e", "d"])]
