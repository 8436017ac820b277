"""The _core.pyi stub and the public API must name exactly what the compiled module has."""

from __future__ import annotations

import ast
from pathlib import Path

import esfast
from esfast import _core, core


def _stub_names() -> tuple[set[str], set[str]]:
    stub = ast.parse((Path(esfast.__file__).parent / "_core.pyi").read_text())
    top, table = set(), set()
    for node in stub.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
        if isinstance(node, ast.ClassDef) and node.name == "NoiseTable":
            table = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
    return top, table


def test_stub_matches_module() -> None:
    top, table = _stub_names()
    assert top == {name for name in dir(_core) if not name.startswith("_")}
    assert table == {name for name in dir(_core.NoiseTable) if not name.startswith("_")}


def test_public_api_is_exported() -> None:
    assert set(core.__all__) <= set(dir(core))
    assert set(core.__all__) <= set(esfast.__all__)
    for name in core.__all__:
        assert getattr(core, name).__doc__, f"{name} has no docstring"


def test_package_ships_typing_marker() -> None:
    assert (Path(esfast.__file__).parent / "py.typed").exists()
