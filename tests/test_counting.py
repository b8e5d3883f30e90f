"""NFE counting: every module call by the rows it evaluates, target oracles, outermost only, warnings.

Oracles: torchdiffeq's solvers (Euler 1, RK4 4 evaluations per step; dopri5
checked against the vector field's own call count) and samplers whose number
of evaluations is known by construction.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torchdiffeq import odeint

from bench import hookimpl
from bench.cache import ModelCache
from bench.contracts import REFERENCE_SAMPLER, FitContext, Sampler, Target
from bench.counting import CallCounter, CountedTarget, count_evaluations, evaluated_rows
from bench.plugins import DISABLE_AUTOLOAD_ENV, get_plugin_manager
from bench.profiles import get_profile
from bench.registry import Registry
from bench.report.markdown import render
from bench.runner import PairSession, RunConfig, run
from targets.mixtures import gmm3d
from tests.conftest import registered

N = 64


class VelocityTX(nn.Module):
    """``v(t, x)`` in torchdiffeq's argument order; records its own calls as an independent count."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.calls = 0

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        self.calls += 1
        return torch.tanh(self.linear(x)) * (1 + t)


def _solve(method: str, steps: int, **kwargs) -> tuple[VelocityTX, CallCounter]:
    velocity = VelocityTX()
    with torch.no_grad(), count_evaluations() as counter:
        odeint(velocity, torch.randn(N, 2), torch.linspace(1.0, 0.0, steps + 1), method=method, **kwargs)
    return velocity, counter


@pytest.mark.parametrize(("method", "per_step"), [("euler", 1), ("rk4", 4)])  # torchdiffeq's rk4: 3/8 rule
def test_torchdiffeq_fixed_step_solvers_count_every_evaluation(method, per_step):
    velocity, counter = _solve(method, 8)
    assert velocity.calls == 8 * per_step
    assert counter.nfe_per_sample(N) == 8 * per_step
    assert counter.nfe_split(N) == {"network": 8 * per_step, "oracle": 0.0}


def test_torchdiffeq_dopri5_counts_what_the_vector_field_saw():
    velocity, counter = _solve("dopri5", 1, rtol=1e-6, atol=1e-8)
    assert velocity.calls > 6  # adaptive: several accepted steps of 6 stages
    assert counter.nfe_per_sample(N) == velocity.calls
    assert counter.calls == velocity.calls  # torchdiffeq's wrapper module and the field: one evaluation


class KeywordField(nn.Module):
    def forward(self, *, x: Tensor, t: Tensor) -> Tensor:
        return x * t


class Energy(nn.Module):
    """A 0-d output: the rows come from the inputs."""

    def forward(self, pair: tuple[Tensor, Tensor], scale: Tensor) -> Tensor:
        x, y = pair
        return scale * (x.square().sum() + y.square().sum())


def test_rows_come_from_the_output_then_the_largest_input_of_any_argument_kind():
    t = torch.tensor(0.5)
    with count_evaluations() as counter:
        VelocityTX()(t, torch.randn(N, 2))  # 0-d t first: counted by the output
        KeywordField()(x=torch.randn(N, 2), t=t)  # keyword arguments only
        Energy()((torch.randn(3, 2), torch.randn(N, 2)), scale=t)  # 0-d output: largest nested input
        Energy()((torch.randn(()), torch.randn(())), scale=t)  # nothing batched: one point
    assert counter.network_calls == 4
    assert counter.network_rows == 3 * N + 1


@pytest.mark.parametrize(
    ("args", "kwargs", "output", "rows"),
    [
        ((torch.zeros(()), torch.zeros(5, 2)), {}, {"out": [torch.zeros(7, 2)]}, 7),  # nested output
        ((torch.zeros(5, 2),), {"extra": [torch.zeros(9)]}, torch.zeros(()), 9),  # keyword list input
        ((torch.zeros(5, 2),), {}, None, 5),  # no output tensor
        ((1.0, "x"), {}, (torch.zeros(()), torch.zeros(4)), 1),  # first output tensor 0-d, no batched input
    ],
)
def test_evaluated_rows_rule(args, kwargs, output, rows):
    assert evaluated_rows(args, kwargs, output) == rows


def test_counts_top_level_calls_by_rows_and_ignores_nested_modules():
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x = torch.randn(100, 3)
    with count_evaluations() as counter:
        for chunk in x.split(30):  # one evaluation of every sample, in 4 chunks
            net(chunk)
        net(net(x))  # two more evaluations of every sample
    assert counter.calls == 6
    assert counter.nfe_per_sample(100) == 3.0


class Outer(nn.Module):
    """A module calling another module and an oracle of a counted target: one evaluation."""

    def __init__(self, target: Target) -> None:
        super().__init__()
        self.inner, self.target = nn.Linear(3, 3), target

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x) + self.target.score(x)


def test_nested_modules_and_oracles_count_once_as_the_outermost_kind():
    outer = Outer(CountedTarget(gmm3d()))
    with count_evaluations() as counter:
        outer(torch.randn(N, 3))
        outer.target.score(torch.randn(N, 3))
    assert (counter.network_calls, counter.network_rows) == (1, N)
    assert (counter.oracle_calls, counter.oracle_rows) == (1, N)
    assert counter.nfe_split(N) == {"network": 1.0, "oracle": 1.0} and counter.nfe_per_sample(N) == 2.0


def _global_hook_counts() -> tuple[int, int]:
    module = torch.nn.modules.module
    return len(module._global_forward_pre_hooks), len(module._global_forward_hooks)


def test_hooks_are_removed_after_counting_even_on_error():
    before = _global_hook_counts()
    net = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError):
        with count_evaluations():
            assert _global_hook_counts() == (before[0] + 1, before[1] + 1)  # installed for the block
            net(torch.randn(4, 3))  # wrong shape raises inside forward
    assert _global_hook_counts() == before
    with count_evaluations() as counter:
        net(torch.randn(5, 2))
    assert _global_hook_counts() == before
    assert counter.calls == 1 and counter.rows == 5


def test_a_failed_inner_call_does_not_leave_the_counter_nested():
    inner = nn.Linear(2, 2)

    class Tolerant(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            try:
                inner(x[:, :1])  # wrong shape: raises, caught here
            except RuntimeError:
                pass
            return inner(x)

    with count_evaluations() as counter:
        Tolerant()(torch.randn(6, 2))
        inner(torch.randn(4, 2))
    assert (counter.calls, counter.rows) == (2, 10)


def test_counting_blocks_do_not_nest():
    with count_evaluations():
        with pytest.raises(RuntimeError, match="do not nest"):
            with count_evaluations():
                pass


# --------------------------------------------------------------------------- the counted view


class ModuleTarget(Target):
    """A plugin-like target whose oracles and sampler run modules internally.

    ``score`` calls ``log_prob`` (one oracle evaluation), ``sample`` uses a
    module (never counted), and it has a custom attribute and method.
    """

    name = "module-target"
    dim = 2

    def __init__(self) -> None:
        self.energy = nn.Linear(2, 1)
        self.shift = 0.25

    def sample(self, n, generator, dtype=torch.float32):
        with torch.no_grad():
            x = torch.randn(n, 2, generator=generator, device=generator.device, dtype=dtype)
            return x + self.energy(x) * 0

    def log_prob(self, x):
        return -0.5 * x.square().sum(-1) + self.energy(x).squeeze(-1) * 0

    def score(self, x):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(self.log_prob(x).sum(), x)[0]

    def shifted(self, x):
        return x + self.shift


def test_counted_view_delegates_everything_but_counts_oracles():
    target = ModuleTarget()
    view = CountedTarget(target)
    assert isinstance(view, Target) and view.wrapped is target and CountedTarget(view).wrapped is target
    assert (view.name, view.dim, view.shift, view.energy) == (target.name, 2, 0.25, target.energy)
    assert view.shifted(torch.zeros(1, 2)).tolist() == [[0.25, 0.25]]
    assert view.has("score") and view.has("log_prob") and not view.has("noised_score")
    gmm = gmm3d()
    assert CountedTarget(gmm).has("noised_score") and CountedTarget(gmm).metric_specs == gmm.metric_specs
    assert CountedTarget(gmm).fingerprint() == gmm.fingerprint()
    x = torch.randn(N, 2)
    with count_evaluations() as counter:
        view.sample(N, torch.Generator().manual_seed(0))
        view.score(x)
        view.log_prob(x)
    assert (counter.network_calls, counter.oracle_calls, counter.oracle_rows) == (0, 2, 2 * N)
    counted = (counter.network_calls, counter.network_rows, counter.oracle_calls, counter.oracle_rows)
    assert torch.equal(view.score(x), target.score(x))  # outside a counting block: a plain call
    assert (counter.network_calls, counter.network_rows, counter.oracle_calls, counter.oracle_rows) == counted


def test_cache_keys_are_the_same_through_the_counted_view():
    ctx = FitContext(torch.device("cpu"), torch.float32, 0, get_profile("smoke"), ModelCache(None))
    for target in (gmm3d(), ModuleTarget()):
        config = {"version": 1}
        assert ModelCache.key(ctx, "epsnet", CountedTarget(target), config) == ModelCache.key(
            ctx, "epsnet", target, config)


# --------------------------------------------------------------------------- through the runner


class Langevin(Sampler):
    """50 unadjusted Langevin steps on ``target.score``: NFE 50, all of it oracle."""

    name = "langevin-50"

    def fit(self, target, ctx):
        def sample(n, generator):
            x = torch.randn(n, target.dim, generator=generator)
            for _ in range(50):
                x = x + 1e-2 * target.score(x) + 0.1 * torch.randn(x.shape, generator=generator)
            return x

        return sample


class NoEvaluations(Sampler):
    name = "standard-normal"

    def fit(self, target, ctx):
        return lambda n, generator: torch.randn(n, target.dim, generator=generator)


class Declares(Sampler):
    """Two module evaluations per sample; declares ``declared``."""

    def __init__(self, name: str, declared: float | None) -> None:
        self.name, self.declared = name, declared

    def expected_nfe(self, target):
        return self.declared

    def fit(self, target, ctx):
        net = nn.Linear(target.dim, target.dim)
        return lambda n, generator: net(net(torch.randn(n, target.dim, generator=generator)))


class TrainsOnScore(Sampler):
    """Calls the score and a module while fitting (not counted), one module call per sample when sampling."""

    name = "trains-on-score"

    def fit(self, target, ctx):
        net = nn.Linear(target.dim, target.dim)
        x = target.sample(100, torch.Generator().manual_seed(0))
        for _ in range(10):
            net(target.score(x))
        return lambda n, generator: net(torch.randn(n, target.dim, generator=generator))


class Plugin:
    @hookimpl
    def register_samplers(self, register):
        for sampler in (Langevin(), NoEvaluations(), Declares("declares-2", 2.0), Declares("declares-3", 3.0),
                        TrainsOnScore()):
            register(sampler)


@pytest.fixture(scope="module")
def rows():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DISABLE_AUTOLOAD_ENV, "1")
        with registered(get_plugin_manager(), Plugin(), "counting-plugins") as registry:
            names = ["target-draws", "langevin-50", "standard-normal", "declares-2", "declares-3", "ddim-5@exact",
                     "trains-on-score"]
            config = RunConfig(names, ["gmm3d"], get_profile("smoke"), torch.device("cpu"), n=400, repeats=1,
                               warmup=0)
            return {row["sampler"]: row for row in run(config, registry)["rows"]}


def test_a_sampler_calling_the_target_score_50_times_has_nfe_50(rows):
    row = rows["langevin-50"]
    assert row["status"] == "ok" and row["nfe"] == 50.0
    assert row["nfe_split"] == {"network": 0.0, "oracle": 50.0} and row["warnings"] == []


def test_calls_made_while_fitting_are_not_counted(rows):
    assert rows["trains-on-score"]["nfe_split"] == {"network": 1.0, "oracle": 0.0}


def test_exact_diffusion_rows_count_the_exact_eps_module_once(rows):
    # ExactEps is an nn.Module: a network evaluation; the noised_score it calls is nested, not counted again.
    row = rows["ddim-5@exact"]
    assert row["nfe"] == 5.0 and row["nfe_split"] == {"network": 5.0, "oracle": 0.0} and row["warnings"] == []


def test_zero_nfe_is_flagged_except_for_the_reference_row(rows):
    assert rows[REFERENCE_SAMPLER]["nfe"] == 0.0 and rows[REFERENCE_SAMPLER]["warnings"] == []
    assert rows["standard-normal"]["nfe"] == 0.0
    assert len(rows["standard-normal"]["warnings"]) == 1 and "NFE 0" in rows["standard-normal"]["warnings"][0]


def test_declared_nfe_disagreeing_with_the_count_is_flagged(rows):
    assert rows["declares-2"]["nfe"] == rows["declares-3"]["nfe"] == 2.0
    assert rows["declares-2"]["warnings"] == []
    assert rows["declares-3"]["warnings"] == ["counted NFE 2 differs from the 3 the sampler declares"]


def test_leaderboard_marks_warnings_and_shows_the_oracle_part(rows):
    results = {
        "schema": "pingsbench.results/1",
        "environment": {"device": "cpu", "device_name": "x", "dtype": "float32", "torch": "2", "torch_threads": 1,
                        "python": "3", "platform": "linux", "pingsbench": "0"},
        "config": {"profile": "smoke", "n": 400, "seed": 0, "repeats": 1, "warmup": 0},
        "metric_info": {},
        "rows": list(rows.values()),
    }
    lines = render(results).splitlines()

    def nfe_cell(name):
        return next(line.split("|")[2].strip() for line in lines if line.startswith(f"| {name}"))

    assert nfe_cell("langevin-50") == "50 (50 oracle)" and nfe_cell("ddim-5@exact") == "5"
    assert nfe_cell("standard-normal") == "0 ⚠" and nfe_cell("declares-3") == "2 ⚠"
    assert nfe_cell("declares-2") == "2" and nfe_cell(REFERENCE_SAMPLER) == "0"
    assert "- ⚠ **declares-3**: counted NFE 2 differs from the 3 the sampler declares" in lines
    assert sum(line.startswith("- ⚠ **standard-normal**: NFE 0") for line in lines) == 1


@pytest.mark.parametrize("name", ["ddim-7@exact", "dpm-solver-heun-3@exact", "dpm-solver-2-6@exact",
                                  "dpm-solver++-2m-5@exact"])
def test_built_in_solvers_declare_the_nfe_they_are_counted_at(name, plugin_manager):
    registry = Registry.from_plugin_manager(plugin_manager)
    config = RunConfig([name], ["gmm3d"], get_profile("smoke"), torch.device("cpu"), n=50)
    session = PairSession.fit(registry.sampler(name), gmm3d(), config, ModelCache(None))
    _, nfe = session.sample_counted()
    assert nfe["nfe"] == session.sampler.expected_nfe(session.target) > 0 and nfe["warnings"] == []

