"""The layering, checked by tools rather than by convention:

- import-linter's contracts (pyproject.toml, [tool.importlinter]): critics <- training <- service;
  the contracts import nothing of ours but the torch-free training modules; the client imports only
  the contracts and those modules; the server never imports the client; the torch-free modules
  never import torch. import-linter sees function-level imports too.
- no import cycle among the project's modules, counting module-level and function-level imports
  (a cycle through function-level imports is still a cycle: it only fails later, at call time).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("critics", "training", "service")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
            if "migrations" not in p.parts}


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``name`` imports anywhere in its body (functions included), except
    under ``if TYPE_CHECKING:`` (never run). ``from pkg import x`` counts as importing ``pkg.x``
    when that is a module, else ``pkg``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in found if m in modules and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None: a depth-first search."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_function_level_imports_count(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import typing\nif typing.TYPE_CHECKING:\n    import service.server.db\n"
                      "def f():\n    from service.server import auth\n    from .domain import Context\n")
    modules = {"service.server.m": source, "service.server.auth": source, "service.server.domain": source,
               "service.server.db": source}
    assert imports_of("service.server.m", source, modules) == {"service.server.auth", "service.server.domain"}


def test_no_import_cycle_among_the_project_modules():
    modules = project_modules()
    assert {"service.client.client", "service.server.app", "service.contracts", "training.table"} <= set(modules)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_client_and_contracts_import_only_the_contracts_and_the_torch_free_modules():
    """What import-linter's forbidden contracts cannot say: an allow-list. The torch-free set is
    the one the "torch-free" contract in pyproject.toml names."""
    import tomllib

    import grimp

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    torch_free = set(next(c for c in config["contracts"] if c["id"] == "torch-free")["source_modules"])
    graph = grimp.build_graph(*PACKAGES, cache_dir=None, exclude_type_checking_imports=True)
    for layer, own in (("service.client", ("service.client", "service.contracts")), ("service.contracts", ("service.contracts",))):
        for module in graph.find_descendants(layer) | {layer}:
            for imported in graph.find_modules_directly_imported_by(module):
                allowed = imported in torch_free or any(imported == p or imported.startswith(p + ".") for p in own)
                assert allowed, f"{module} imports {imported}: neither {' nor '.join(own)} nor a torch-free module"


def test_import_linter_contracts_hold(capsys):
    from importlinter.cli import lint_imports

    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    report = capsys.readouterr().out
    assert code == 0, report
    assert "BROKEN" not in report and report.count("KEPT") >= 5, report
