"""Who imports whom, read from the source with `ast` (nothing is imported).

`scan(root, packages)` reads every .py file of the packages (dotted name -> folder under root) and returns
one Module per file with every import it makes: module-level ones, lazy ones inside functions, and the
ones under `if TYPE_CHECKING:` (flagged type_only). The checks take what scan returned and a table, and
return messages naming file, line and import, e.g.
"server/core/settings.py:12 imports nightlab.server.run.runner (core may import: nothing of nightlab)".
An empty list means the tree keeps the rule.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

STDLIB = frozenset(sys.stdlib_module_names) | {"tomllib"}  # tomllib: standard library from 3.11


@dataclass(frozen=True)
class Import:
    file: str  # posix path relative to the scanned root
    line: int
    module: str  # the absolute dotted name imported ("from a.b import c" is a.b.c when c is a module)
    lazy: bool = False  # inside a function: runs when called, not on import
    type_only: bool = False  # under `if TYPE_CHECKING:`: never runs

    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Module:
    name: str
    file: str
    imports: list[Import] = field(default_factory=list)


def scan(root: Path, packages: Mapping[str, str]) -> dict[str, Module]:
    """Every module of `packages` ({"nightlab.server": "server", ...}) under `root`, by dotted name."""
    modules: dict[str, Module] = {}
    for package, folder in packages.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            modules[name] = Module(name, path.relative_to(root).as_posix())
    for mod in modules.values():
        tree = ast.parse((root / mod.file).read_text(encoding="utf-8"), filename=mod.file)
        is_package = mod.file.endswith("/__init__.py")
        mod.imports = list(_imports(tree, mod, is_package, set(modules)))
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, mod: Module, is_package: bool, known: set[str]) -> Iterable[Import]:
    package = mod.name if is_package else mod.name.rpartition(".")[0]

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = package.split(".")
        if node.level - 1 >= len(base):  # above the top package: no such module
            return "." * node.level + (node.module or "")
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def visit(node: ast.AST, lazy: bool, type_only: bool) -> Iterable[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(mod.file, child.lineno, alias.name, lazy, type_only)
            elif isinstance(child, ast.ImportFrom):
                target = resolve(child)
                if target == "__future__":
                    continue
                if target.startswith("."):  # above the top package: name it as written
                    yield Import(
                        mod.file,
                        child.lineno,
                        target if child.module else target + child.names[0].name,
                        lazy,
                        type_only,
                    )
                    continue
                seen = False
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    if sub in known:  # `from pkg import module`: the module is what gets loaded
                        yield Import(mod.file, child.lineno, sub, lazy, type_only)
                    elif not seen:
                        seen = True
                        yield Import(mod.file, child.lineno, target, lazy, type_only)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), lazy, True)
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), lazy, type_only)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from visit(child, True, type_only)
            else:
                yield from visit(child, lazy, type_only)

    yield from visit(tree, False, False)


Prefixes = Mapping[str, "str | tuple[str, ...]"]  # layer -> the dotted prefix (or prefixes) of its modules


def _prefixes(layers: Prefixes) -> Iterable[tuple[str, str]]:
    for name, prefixes in layers.items():
        for prefix in (prefixes,) if isinstance(prefixes, str) else prefixes:
            yield name, prefix


def layer_of(module: str, layers: Prefixes) -> str | None:
    """The layer owning `module`: the one with the longest prefix that matches."""
    best, length = None, -1
    for name, prefix in _prefixes(layers):
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
            best, length = name, len(prefix)
    return best


def _nightlab(module: str, layers: Prefixes) -> bool:
    """Whether `module` is one of ours: under a top package of the layers, or relative beyond the top one."""
    return module.startswith(".") or module.split(".")[0] in {prefix.split(".")[0] for _, prefix in _prefixes(layers)}


def layer_violations(
    modules: Mapping[str, Module], layers: Prefixes, allowed: Mapping[str, Iterable[str]], only: str | None = None
) -> list[str]:
    """Every import of one layer's module from a layer it may not import (`only`: check that layer only)."""
    out = []
    for mod in modules.values():
        own = layer_of(mod.name, layers)
        if own is None or (only is not None and own != only):
            continue
        may = set(allowed.get(own, ()))
        for imp in mod.imports:
            if not _nightlab(imp.module, layers):
                continue
            target = layer_of(imp.module, layers)
            if target is not None and (target == own or target in may):
                continue
            what = ", ".join(sorted(may)) or "nothing of nightlab"
            why = (
                "a relative import above the top package"
                if imp.module.startswith(".")
                else "no layer owns it"
                if target is None
                else f"{own} may import: {what}"
            )
            out.append(f"{imp.where()} imports {imp.module} ({why})")
    return out


def owner_violations(
    modules: Mapping[str, Module], layers: Prefixes, owners: Iterable[str], distributions: Iterable[str]
) -> list[str]:
    """Imports of any of the top-level `distributions` ("rich", ...) from outside the `owners` layers."""
    owners, distributions = set(owners), set(distributions)
    out = []
    for mod in modules.values():
        own = layer_of(mod.name, layers)
        if own in owners:
            continue
        for imp in mod.imports:
            top = imp.module.split(".")[0]
            if top in distributions:
                out.append(
                    f"{imp.where()} imports {imp.module} (only {', '.join(sorted(owners))} may import "
                    f"{', '.join(sorted(distributions))})"
                )
    return out


def stdlib_only_violations(
    modules: Mapping[str, Module], layers: Prefixes, layer: str, extra: Iterable[str] = ()
) -> list[str]:
    """Imports of `layer`'s modules that are neither the standard library, nightlab, nor one of `extra`."""
    extra = set(extra)
    out = []
    for mod in modules.values():
        if layer_of(mod.name, layers) != layer:
            continue
        for imp in mod.imports:
            top = imp.module.split(".")[0]
            if top not in STDLIB and top not in extra and not _nightlab(imp.module, layers):
                also = "".join(f", {name}" for name in sorted(extra))
                out.append(f"{imp.where()} imports {imp.module} ({layer} may import only the standard library{also})")
    return out


@dataclass(frozen=True)
class Cycle:
    modules: frozenset[str]  # the modules that import each other, directly or not
    imports: tuple[Import, ...]  # every import from one of them to another: each lies on a cycle

    def __str__(self) -> str:
        steps = "; ".join(
            f"{imp.where()} imports {imp.module}" + (" (lazily)" if imp.lazy else "") for imp in self.imports
        )
        return f"import cycle among {', '.join(sorted(self.modules))}: {steps}"


def import_cycles(modules: Mapping[str, Module], prefix: str = "") -> list[Cycle]:
    """The import cycles among the modules under `prefix`, one per group of modules that import each other
    (a strongly connected component), naming every import inside the group. Module-level and lazy imports
    both count (a lazy import still needs the other module importable); `if TYPE_CHECKING:` ones never run."""
    names = sorted(m for m in modules if not prefix or m == prefix or m.startswith(prefix + "."))
    edges: dict[str, dict[str, Import]] = {n: {} for n in names}
    for n in names:
        for imp in modules[n].imports:
            if imp.type_only or imp.module not in edges or imp.module == n:
                continue
            edges[n].setdefault(imp.module, imp)  # the first import of it names the edge
    out = []
    for component in _components(names, edges):
        if len(component) > 1:
            inside = sorted(
                (imp for a in component for b, imp in edges[a].items() if b in component),
                key=lambda imp: (imp.file, imp.line, imp.module),
            )
            out.append(Cycle(frozenset(component), tuple(inside)))
    return sorted(out, key=lambda c: sorted(c.modules))


def _components(names: list[str], edges: Mapping[str, Mapping[str, Import]]) -> list[set[str]]:
    """Strongly connected components (Tarjan's, iterative so a deep chain does not hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in names:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.add(top)
                    if top == node:
                        break
                found.append(component)
    return found


def imports_of_test_modules(tests: Path) -> list[str]:
    """Imports of a test module or of conftest in what pytest loads from `tests`: its own .py files and
    support/'s (not other folders: tests/fixtures/ holds scripts that are not run). Shared helpers live in
    tests/support/, and pytest loads conftest itself."""
    out = []
    for path in sorted([*tests.glob("*.py"), *(tests / "support").rglob("*.py")]):
        file = path.relative_to(tests.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=file)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                last = name.split(".")[-1]
                if last.startswith("test_") or last == "conftest":
                    out.append(
                        f"{file}:{node.lineno} imports {name} (a test module; shared helpers go in tests/support/)"
                    )
    return out
