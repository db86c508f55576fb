"""Static code closure of a project function, for checking ``dvc.yaml`` dependencies.

Why static: running every stage under an import hook takes minutes and only sees the code path of
one parameter setting; the syntax tree sees every import a function can execute.

The closure is followed at the level of top-level names, because ``srseg`` keeps several entry
points per module (``srseg.stages.data`` holds both download and degrade) and imports heavy
modules inside functions. Using a function or class of a module means: every import inside it,
every other top-level name of the module it refers to (functions, classes, constants), and
every module-level import it refers to, each followed the same way. A module used as a whole
(``import x``, or a name that is not a simple top-level definition) follows all its imports.

A package ``__init__`` that re-exports a name (``from srseg.stages import run_evaluate``) counts
as a file of the closure, and the name is followed to the submodule that defines it. Modules
that are only imported on the way (parent packages, siblings imported by an ``__init__``) are
not part of the closure: the project has no import-time side effects, so their code cannot change
what the stage computes. Imports under ``if TYPE_CHECKING:`` never run and are skipped.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

WHOLE = None  # symbol of a module used as a whole


@dataclass(frozen=True)
class Ref:
    """A module, or one top-level name in it."""

    module: str
    symbol: str | None = WHOLE


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_in(node: ast.AST, into_definitions: bool = True) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node`` that can run (``if TYPE_CHECKING:`` bodies skipped);
    with ``into_definitions=False`` only those that run when ``node`` itself runs (not the
    bodies of the functions and classes it defines)."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack = list(ast.iter_child_nodes(node))
    while stack:
        current = stack.pop()
        if isinstance(current, (ast.Import, ast.ImportFrom)):
            found.append(current)
        elif isinstance(current, ast.If) and _is_type_checking(current.test):
            stack += current.orelse
        elif into_definitions or not isinstance(current, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stack += list(ast.iter_child_nodes(current))
    return found


def _names_in(node: ast.AST) -> set[str]:
    """Identifiers an expression or definition refers to (a superset of what it really uses)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


@dataclass
class ImportGraph:
    """Modules of one top-level package under ``root`` (the folder that holds the package)."""

    root: Path
    package: str
    files: dict[str, Path] = field(default_factory=dict)
    _trees: dict[str, ast.Module] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for path in sorted((self.root / self.package).rglob("*.py")):
            parts = list(path.relative_to(self.root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            self.files[".".join(parts)] = path

    # one module -----------------------------------------------------------------------------
    def tree(self, module: str) -> ast.Module:
        if module not in self._trees:
            path = self.files[module]
            self._trees[module] = ast.parse(path.read_text(encoding="utf-8"), str(path))
        return self._trees[module]

    def is_package(self, module: str) -> bool:
        return self.files[module].name == "__init__.py"

    def definitions(self, module: str) -> dict[str, ast.AST]:
        """Top-level functions, classes and assigned names of ``module``."""
        defs: dict[str, ast.AST] = {}
        for node in self.tree(module).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defs[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            defs[name.id] = node
        return defs

    def _ours(self, name: str) -> bool:
        return name == self.package or name.startswith(self.package + ".")

    def _base(self, module: str, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = module.split(".") if self.is_package(module) else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        return ".".join(parts + ([node.module] if node.module else []))

    def import_refs(self, module: str, node: ast.Import | ast.ImportFrom) -> dict[str, Ref]:
        """Bound name -> what it refers to, for the project modules one import statement names."""
        refs: dict[str, Ref] = {}
        if isinstance(node, ast.Import):
            for alias in node.names:
                if self._ours(alias.name):
                    refs[alias.asname or alias.name.split(".")[0]] = Ref(alias.name)
            return refs
        base = self._base(module, node)
        if self._ours(base):
            for alias in node.names:
                refs[alias.asname or alias.name] = Ref(base, alias.name)
        return refs

    def module_bindings(self, module: str) -> dict[str, Ref]:
        """Names bound by the module-level imports of ``module`` (TYPE_CHECKING ones excluded)."""
        bindings: dict[str, Ref] = {}
        for node in _imports_in(self.tree(module), into_definitions=False):
            bindings.update(self.import_refs(module, node))
        return bindings

    def imports_run_by(self, module: str, function: str) -> list[Ref]:
        """What the import statements in the body of ``module.function`` name (not its callees)."""
        node = self.definitions(module)[function]
        return [r for imp in _imports_in(node, into_definitions=False) for r in self.import_refs(module, imp).values()]

    # references -----------------------------------------------------------------------------
    def resolve(self, ref: Ref, touched: set[str]) -> Ref:
        """Where a name really lives: a submodule, a definition, or a re-export of a package.

        Re-exporting packages are added to ``touched`` (their ``__init__`` decides what the name
        means)."""
        if ref.symbol is WHOLE or ref.module not in self.files:
            return ref
        submodule = f"{ref.module}.{ref.symbol}"
        if submodule in self.files:
            return Ref(submodule)
        if ref.symbol in self.definitions(ref.module):
            return ref
        reexport = self.module_bindings(ref.module).get(ref.symbol)
        if reexport is not None and reexport.module != ref.module:
            touched.add(ref.module)
            return self.resolve(reexport, touched)
        return Ref(ref.module)

    def closure(self, roots: list[Ref]) -> set[Path]:
        """Files whose code can run when ``roots`` are used (see the module docstring)."""
        touched: set[str] = set()
        seen: set[Ref] = set()
        todo = list(roots)
        while todo:
            ref = self.resolve(todo.pop(), touched)
            if ref in seen or ref.module not in self.files:
                continue
            seen.add(ref)
            touched.add(ref.module)
            todo += self._uses(ref)
        return {self.files[m] for m in touched}

    def _uses(self, ref: Ref) -> list[Ref]:
        """What using ``ref`` uses next."""
        module = ref.module
        if ref.symbol is WHOLE:
            node: ast.AST = self.tree(module)
            return [r for imp in _imports_in(node) for r in self.import_refs(module, imp).values()]
        node = self.definitions(module)[ref.symbol]
        uses = [r for imp in _imports_in(node) for r in self.import_refs(module, imp).values()]
        defs, bindings = self.definitions(module), self.module_bindings(module)
        for name in _names_in(node):
            if name in defs and name != ref.symbol:
                uses.append(Ref(module, name))
            elif name in bindings:
                uses.append(bindings[name])
        return uses
