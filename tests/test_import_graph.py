"""The house's imports run one way (kuaihl_rec/apps/__init__.py draws it):

* no module of ``kuaihl_rec`` outside the application layer (``kuaihl_rec.apps``) imports
  ``baselines`` or ``ranking``;
* ``baselines`` and ``ranking`` never import the application layer; ``ranking`` never imports the
  trainer (it receives a scoring function);
* a function-level import of our own packages carries a comment saying why (a heavy optional
  dependency, start-up time of ``kuaihl --help``); everything else imports at the top.

Read from the source with ``ast`` (every ``import`` statement, wherever it is), not from
``sys.modules``, so a lazy import cannot hide.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("kuaihl_rec", "baselines", "ranking")
APP = "kuaihl_rec.apps"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> Iterator[Tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import statement of ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> Iterator[Tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, in_function
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    name = ".".join(base + ([child.module] if child.module else []))
                else:
                    name = child.module or ""
                yield name, child.lineno, in_function
            yield from visit(child, inside)

    yield from visit(tree, False)


def _modules(package: str) -> List[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _edges():
    for package in OURS:
        for path in _modules(package):
            for target, line, lazy in _imports(path):
                yield _module_name(path), path, target, line, lazy


def _is(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def test_the_core_never_imports_baselines_or_ranking():
    bad = [f"{src} imports {dst} (line {line})" for src, _, dst, line, _ in _edges()
           if _is(src, "kuaihl_rec") and not _is(src, APP) and (_is(dst, "baselines") or _is(dst, "ranking"))]
    assert not bad, "\n".join(bad)


def test_baselines_and_ranking_never_import_the_application_layer():
    bad = [f"{src} imports {dst} (line {line})" for src, _, dst, line, _ in _edges()
           if (_is(src, "baselines") or _is(src, "ranking")) and _is(dst, APP)]
    bad += [f"{src} imports {dst} (line {line})" for src, _, dst, line, _ in _edges() if _is(src, "ranking") and _is(dst, "kuaihl_rec.train")]
    bad += [f"{src} imports {dst} (line {line})" for src, _, dst, line, _ in _edges() if _is(src, "baselines") and _is(dst, "ranking")]
    bad += [f"{src} imports {dst} (line {line})" for src, _, dst, line, _ in _edges() if _is(src, "ranking") and _is(dst, "baselines")]
    assert not bad, "\n".join(bad)


def _commented(lines: List[str], index: int) -> bool:
    """The import on ``lines[index]`` has a comment, or its block of import lines starts under one."""
    if "#" in lines[index]:
        return True
    i = index - 1
    while i >= 0 and lines[i].strip().startswith(("from ", "import ")):
        i -= 1
    return i >= 0 and lines[i].strip().startswith("#")


def test_function_level_imports_of_our_packages_say_why():
    bad = []
    for src, path, dst, line, lazy in _edges():
        if not lazy or not any(_is(dst, p) for p in OURS):
            continue
        lines = path.read_text().splitlines()
        if not _commented(lines, line - 1):
            bad.append(f"{path.relative_to(REPO)}:{line}: {lines[line - 1].strip()}")
    assert not bad, "function-level imports of our own packages without a comment saying why:\n" + "\n".join(bad)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    pkg = REPO / "kuaihl_rec" / "_probe_for_import_graph_test.py"
    assert not pkg.exists()
    pkg.write_text("def f():\n    from ranking import blend\n\nfrom . import data\n")
    try:
        found = list(_imports(pkg))
    finally:
        pkg.unlink()
    assert ("ranking", 2, True) in found and ("kuaihl_rec", 4, False) in found


@pytest.mark.parametrize("package", OURS)
def test_every_module_parses(package):
    assert _modules(package), package
    for path in _modules(package):
        ast.parse(path.read_text(), filename=str(path))
