"""The plugin guide (docs/plugins.md) works as written.

Its ```python blocks are executed in order: blocks whose first line is a
``# tests/...`` comment are test modules, each run in its own namespace; all
other blocks together are the guide's plugin module, ``my_package.plugin``.
A block marked ```python skip is only compiled.  The guide's plugin then runs
through the real runner, and the guide's own test functions are run here.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

from bench import testing
from bench.contracts import FitContext

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
BLOCK = re.compile(r"^( *)```python([^\n]*)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)  # also indented (in lists)
TEST_BLOCK = re.compile(r"#\s*tests/")

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread is several times faster


@dataclasses.dataclass(frozen=True)
class Block:
    code: str
    line: int  # line of the guide where the code starts
    skip: bool

    @property
    def is_test_module(self) -> bool:
        return bool(TEST_BLOCK.match(self.code))

    def compiled(self):
        # Leading newlines make tracebacks point at the guide's own line numbers.
        return compile("\n" * (self.line - 1) + self.code, str(GUIDE), "exec")


def guide_blocks() -> list[Block]:
    text = GUIDE.read_text()
    return [Block(textwrap.dedent(m[3]), text.count("\n", 0, m.start(3)) + 1, "skip" in m[2].split())
            for m in BLOCK.finditer(text)]


GUIDE_TESTS = [name for block in guide_blocks() if block.is_test_module and not block.skip
               for name in re.findall(r"^def (test_\w+)\(", block.code, re.MULTILINE)]


@pytest.fixture(scope="module")
def guide() -> tuple[types.ModuleType, dict[str, types.ModuleType]]:
    """The guide's plugin module and its test modules (by test-function name), executed from the guide."""
    plugin = types.ModuleType("my_package.plugin")
    package = types.ModuleType("my_package")
    package.__path__ = []
    package.plugin = plugin
    tests: dict[str, types.ModuleType] = {}
    with pytest.MonkeyPatch.context() as patch:  # `import my_package.plugin` in the test blocks finds it
        patch.setitem(sys.modules, "my_package", package)
        patch.setitem(sys.modules, "my_package.plugin", plugin)
        for block in guide_blocks():
            if block.skip:
                continue
            if block.is_test_module:
                module = types.ModuleType(f"guide_test_line_{block.line}")
                exec(block.compiled(), module.__dict__)
                tests.update({name: module for name in vars(module) if name.startswith("test_")})
            else:
                exec(block.compiled(), plugin.__dict__)
    return plugin, tests


def test_guide_has_a_plugin_and_its_tests():
    blocks = guide_blocks()
    assert len([b for b in blocks if not b.skip and not b.is_test_module]) >= 4
    assert len(GUIDE_TESTS) >= 3
    for block in blocks:  # skipped blocks still have to be valid Python
        block.compiled()


@pytest.mark.parametrize("name", GUIDE_TESTS)
def test_the_guides_own_tests_pass(guide, name, request):
    function = getattr(guide[1][name], name)
    fixtures = {parameter: request.getfixturevalue(parameter) for parameter in inspect.signature(function).parameters}
    function(**fixtures)


@pytest.fixture
def registry(guide, pingsbench_registry):
    return pingsbench_registry(guide[0])


def test_guide_plugin_registers_what_it_says(registry):
    assert registry.targets["tilted2d"].source == "test plugin my_package.plugin"
    assert "affine-flow" in registry.samplers and "langevin-<steps>" in registry.families
    assert "langevin-50" in registry.default_samplers()
    assert {"langevin-10", "langevin-200"} <= set(registry.sweep_samplers())


def test_noised_score_enables_the_exact_solver_rows(registry):
    row = testing.run_one(registry, "ddim-10@exact", "tilted2d", n=500)
    assert row["nfe"] == pytest.approx(10.0)
    assert row["fit"]["artifacts"]["eps"] == "exact"


def test_extra_metric_reaches_the_row_and_measures_the_spread(registry):
    row = testing.run_one(registry, "target-draws", "tilted2d", n=2_000)
    # For exact draws it is |mean of χ²₂ − 2| / 2, standard error 0.016 at n = 2 000.
    assert row["metrics"]["mahalanobis_error"] < 0.05
    target = registry.target("tilted2d")
    draws = target.sample(2_000, torch.Generator().manual_seed(1))
    widened = target.mean.float() + 1.5 * (draws - target.mean.float())  # E = 2.25 d: error 1.25
    assert target.extra_metrics(widened, draws)["mahalanobis_error"] == pytest.approx(1.25, abs=0.1)


def test_sampler_needing_a_score_is_skipped_where_there_is_none(registry):
    row = testing.run_one(registry, "langevin-5", "dho", n=200, check=False)
    assert row["status"] == "skipped" and "needs the target's score" in row["error"]


def test_plot_panel_draws_the_scatter_and_the_ellipse(registry):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = registry.target("tilted2d")
    points = target.sample(300, torch.Generator().manual_seed(0))
    figure, ax = plt.subplots()
    try:
        target.plot_panel(ax, points, points, "tilted2d")
        # The default panel's title adds how many generated points fall outside its axes.
        assert len(ax.collections) == 2 and len(ax.lines) == 1
        assert ax.get_title().startswith("tilted2d\n") and ax.get_title().endswith(" of 300 outside")
    finally:
        plt.close(figure)


def test_names_the_guide_uses_exist():
    text = GUIDE.read_text()
    context_members = {f.name for f in dataclasses.fields(FitContext)} | set(dir(FitContext))
    assert set(re.findall(r"\bctx\.(\w+)", text)) <= context_members
    helpers = {"pingsbench_registry", "pingsbench_plugin_manager", "registered", "run_one", "check_target"}
    assert all(f"`{name}" in text for name in helpers) and all(hasattr(testing, name) for name in helpers)
