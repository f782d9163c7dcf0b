"""No import cycles in the package: the graph of every module's imports (module- and function-level,
relative ones resolved) built with ``ast`` from the source, and a cycle named if there is one."""

import ast
from pathlib import Path

PACKAGE = "napari_biogans"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def module_files(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package) for every ``.py`` file under ``root``."""
    modules = {}
    for file in sorted(root.rglob("*.py")):
        parts = list(file.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (file, is_package)
    return modules


def _targets(node, importer: str, is_package: bool, modules) -> list[str]:
    """The package modules one ``import`` / ``from ... import`` statement names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: strip one package level per dot beyond the first
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        base = package[: len(package) - node.level + 1]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    # ``from pkg import name`` imports the submodule pkg.name when there is one, else pkg itself
    return [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in its file.

    Importing ``a.b.c`` also runs the packages ``a.b`` and ``a``, so they count too, except the
    packages that hold the importer (they are already being imported when it runs).
    """
    modules = module_files(root)
    graph = {}
    for name, (file, is_package) in modules.items():
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1 + is_package)}
        edges = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(node, name, is_package, modules):
                while target and target not in modules:  # an attribute of a module: the module
                    target = target.rpartition(".")[0]
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:i])
                    if prefix in modules and prefix != name and prefix not in own_packages:
                        edges.add(prefix)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of the graph, or None (depth-first search, white/grey/black)."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_package_has_no_import_cycle():
    graph = import_graph(SOURCE)
    assert len(graph) > 40 and f"{PACKAGE}.cli" in graph  # the whole package was read
    assert f"{PACKAGE}.sampling" in graph[f"{PACKAGE}.evaluation.profiling"]  # function-level imports count
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_sees_function_level_and_relative_cycles(tmp_path):
    root = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from .sub import b\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "from .. import c\n",
        "pkg/c.py": "import os\n\ndef g():\n    from pkg.a import f\n",
    })
    graph = import_graph(root)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]


def test_a_package_that_imports_its_own_modules_is_not_a_cycle(tmp_path):
    root = write_package(tmp_path, {
        "pkg/__init__.py": "from .models import build\n",
        "pkg/models/__init__.py": "from .table import build\n",
        "pkg/models/table.py": "from .family import Net\n",
        "pkg/models/family.py": "from .. import util\n",
        "pkg/util.py": "X = 1\n",
    })
    graph = import_graph(root)
    assert find_cycle(graph) is None
    # but a module outside the package that the package's __init__ reaches, importing back into it, is one
    (root / "util.py").write_text("def f():\n    from .models.family import Net\n")
    assert find_cycle(import_graph(root)) is not None
