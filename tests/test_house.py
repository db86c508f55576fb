"""House rules that keep the code easy to change, checked on the source (AST, no imports):

- no function in ``srseg/``, ``components/`` or ``pipelines/`` is longer than ``MAX_LINES`` lines
  (def line to last line; a nested function counts in its parent too);
- the library does not reach up into the checkout: nothing in ``srseg/`` imports the top-level
  ``pipelines`` or ``components`` packages, edits ``sys.path`` or imports modules by name with
  importlib (``pipelines/compile.py`` is the compile entry ``srseg`` runs as a program);
- training is a leaf: nothing in ``srseg/``, ``components/`` or ``pipelines/`` imports ``srseg.train``
  except the package itself and the training stage that drives it (``srseg/stages/train.py``);
  what other stages share with training (MLflow, weights files, data) lives outside it.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 80
CHECKED = ("srseg", "components", "pipelines")


def _functions(tree: ast.AST, prefix: str = "") -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function with its qualified name (``Class.method``, ``outer.inner``)."""
    found = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.append((prefix + node.name, node))
            found += _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            found += _functions(node, f"{prefix}{node.name}.")
        else:
            found += _functions(node, prefix)
    return found


def long_functions(root: Path, folders: tuple[str, ...] = CHECKED, limit: int = MAX_LINES) -> dict[str, int]:
    """``{"path::qualname": lines}`` of the functions longer than ``limit`` lines."""
    long = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for name, node in _functions(tree):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > limit:
                    long[f"{path.relative_to(root).as_posix()}::{name}"] = lines
    return long


def reaching_up(root: Path, folder: str = "srseg") -> list[str]:
    """``path:line what`` for each import of the checkout's packages, sys.path edit or importlib
    import in ``folder``."""
    found = []
    for path in sorted((root / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found += [
                f"{where}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in ("pipelines", "components")
            ]
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "path"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            ):
                found.append(f"{where}:{node.lineno} uses sys.path")
            if isinstance(node, ast.Attribute) and node.attr == "import_module":
                found.append(f"{where}:{node.lineno} uses importlib.import_module")
    return sorted(found, key=lambda text: (text.split(":")[0], int(text.split(":")[1].split()[0])))


TRAIN_PACKAGE = "srseg.train"
TRAIN_DRIVERS = ("srseg/train/", "srseg/stages/train.py")


def reaching_into_training(root: Path, folders: tuple[str, ...] = CHECKED) -> list[str]:
    """``path:line imports X`` for each import of ``srseg.train`` outside the package and its driver."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            where = path.relative_to(root).as_posix()
            if where.startswith(TRAIN_DRIVERS):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                    if node.module == "srseg":
                        names = [f"srseg.{alias.name}" for alias in node.names]
                found += [
                    f"{where}:{node.lineno} imports {n}"
                    for n in names
                    if n == TRAIN_PACKAGE or n.startswith(TRAIN_PACKAGE + ".")
                ]
    return found


def test_no_function_is_longer_than_the_limit() -> None:
    long = long_functions(REPO)
    assert not long, f"functions longer than {MAX_LINES} lines (split them into named helpers): {long}"


def test_the_length_check_sees_methods_and_nested_functions(tmp_path: Path) -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(
        f"class A:\n    def long(self):\n{body}\n\n    def short(self):\n        pass\n"
    )
    assert long_functions(tmp_path, ("pkg",)) == {"pkg/mod.py::A.long": MAX_LINES + 1}


def test_the_library_does_not_reach_up_into_the_checkout(tmp_path: Path) -> None:
    assert reaching_up(REPO) == []
    (tmp_path / "srseg").mkdir()
    (tmp_path / "srseg" / "bad.py").write_text(
        "import importlib, sys\nfrom pipelines import training_pipeline\nsys.path.insert(0, '.')\n"
        "importlib.import_module('components')\n"
    )
    assert reaching_up(tmp_path) == [
        "srseg/bad.py:2 imports pipelines",
        "srseg/bad.py:3 uses sys.path",
        "srseg/bad.py:4 uses importlib.import_module",
    ]


def test_only_the_training_stage_imports_the_training_package(tmp_path: Path) -> None:
    assert reaching_into_training(REPO) == []
    for folder in ("srseg/stages", "srseg/train", "components"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "srseg/stages/ship.py").write_text(
        "from srseg.train.tracking import git_commit\nfrom srseg import train\n"
    )
    (tmp_path / "srseg/stages/train.py").write_text("from srseg.train.engine import Trainer\n")
    (tmp_path / "srseg/train/engine.py").write_text("import srseg.train.tracking\n")
    (tmp_path / "components/x.py").write_text("import srseg.training_notes\nimport srseg.train\n")
    assert reaching_into_training(tmp_path, ("srseg", "components")) == [
        "srseg/stages/ship.py:1 imports srseg.train.tracking",
        "srseg/stages/ship.py:2 imports srseg.train",
        "components/x.py:2 imports srseg.train",
    ]
