"""What the import contracts (.importlinter, run by `make test`) cannot say: no two files of explorer/ import each
other, lazily or not, and no file imports another file's private names. grimp is import-linter's own graph."""

import ast
from pathlib import Path

import grimp

EXPLORER = Path(__file__).resolve().parent.parent / "explorer"


def test_no_two_files_import_each_other():
    graph = grimp.build_graph("explorer", exclude_type_checking_imports=True)
    mutual = sorted({tuple(sorted((a, b))) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
                     if a in graph.find_modules_directly_imported_by(b)})
    assert mutual == []


def test_no_file_imports_another_files_private_names():
    found = []
    for path in EXPLORER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("explorer")):
                found += [f"{path.relative_to(EXPLORER)}: {alias.name}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert found == []
