"""Every built-in sampler family has the same shape (README, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

from bench.plugins import DEFAULT_PLUGINS

SAMPLERS = Path(__file__).resolve().parent.parent / "samplers"
FAMILY_MODULES = {"model.py", "train.py", "sample.py"}


def family_packages() -> list[Path]:
    return sorted(p for p in SAMPLERS.iterdir() if (p / "__init__.py").is_file())


def hook_implementations(path: Path) -> list[str]:
    """Names of the functions in ``path`` decorated with ``@hookimpl``."""
    tree = ast.parse(path.read_text())
    return [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and any(isinstance(d, ast.Name) and d.id == "hookimpl" for d in node.decorator_list)
    ]


def test_samplers_holds_only_family_packages_and_the_shared_nets():
    modules = {p.name for p in SAMPLERS.glob("*.py")}
    assert modules == {"__init__.py", "nets.py"}


def test_every_family_is_registered_by_its_plugin_module():
    families = [p.name for p in family_packages()]
    builtin_samplers = [name for name in DEFAULT_PLUGINS if name.startswith("samplers.")]
    assert sorted(builtin_samplers) == sorted(f"samplers.{family}.plugin" for family in families)


def test_families_have_networks_training_and_sampling_in_the_same_modules():
    for package in family_packages():
        modules = {p.name for p in package.glob("*.py")}
        assert "plugin.py" in modules, package.name
        # A family without a network (the reference draws) has none of the three; others have all.
        present = FAMILY_MODULES & modules
        assert present in (set(), FAMILY_MODULES), f"{package.name} has {sorted(present)} of {sorted(FAMILY_MODULES)}"


def test_hooks_are_implemented_only_in_plugin_modules():
    for path in SAMPLERS.rglob("*.py"):
        hooks = hook_implementations(path)
        if path.name == "plugin.py":
            assert hooks == ["register_samplers"], path
        else:
            assert hooks == [], f"{path.relative_to(SAMPLERS)} implements {hooks}; registration belongs in plugin.py"
