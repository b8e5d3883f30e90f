"""Time schedules as an option of every solver: ``+uniform``, ``+logsnr``, ``+karras`` and the learned ``+ld3``.

Fixed schedules are checked against their definitions (Karras et al.'s levels against k-diffusion's
``get_sigmas_karras`` formula); the learned one for what it promises: ordered nodes with fixed ends, a
start at the solver's own spacing, reproducibility from the seed, never worse than its start on its
training batch, evaluation on held-out draws, and caching.
"""

from __future__ import annotations

import pytest
import torch

from bench.cache import ModelCache
from bench.cli import main
from bench.contracts import FitContext
from bench.counting import count_evaluations
from bench.errors import UsageError
from bench.profiles import get_profile
from bench.registry import Registry
from samplers.diffusion.model import ExactEps
from samplers.diffusion.plugin import EDM_HEUN, SCHEDULE_SUFFIXES, SPECS, DiffusionSolverFamily
from samplers.diffusion.sample import ddim
from samplers.diffusion.schedule import KARRAS_RHO, SCHEDULES, DiscreteVPSchedule, LearnedSchedule, timesteps
from samplers.diffusion.train import SCHEDULE_BUDGETS, schedule_loss, teacher_solve
from targets.mixtures import gmm3d

F64 = torch.float64
FAMILIES = {spec.prefix: DiffusionSolverFamily(spec) for spec in (*SPECS, EDM_HEUN)}

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def schedule() -> DiscreteVPSchedule:
    return DiscreteVPSchedule()


def context(cache: ModelCache | None = None, seed: int = 0) -> FitContext:
    return FitContext(torch.device("cpu"), F64, seed, get_profile("smoke"), cache or ModelCache(None))


def resolve(name: str):
    family = next(f for f in FAMILIES.values() if f.regex.fullmatch(name))
    return family.resolve(name)


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """k-diffusion's ``get_sigmas_karras`` (k_diffusion/sampling.py) without its appended zero."""
    ramp = torch.linspace(0, 1, n, dtype=F64)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


@pytest.mark.parametrize("suffix", list(SCHEDULES))
@pytest.mark.parametrize("n_steps", [1, 2, 7])
def test_every_schedule_runs_monotonically_from_the_prior_to_the_data_end(schedule, suffix, n_steps):
    ts = timesteps(schedule, n_steps, SCHEDULES[suffix])
    assert ts.shape == (n_steps + 1,) and ts.dtype == F64
    assert float(ts[0]) == 1.0 and float(ts[-1]) == schedule.t_min
    assert bool((ts.diff() < 0).all())


def test_karras_levels_are_k_diffusions(schedule):
    ts = timesteps(schedule, 9, SCHEDULES["karras"])
    sigmas = torch.exp(-schedule.lambda_(ts))  # EDM's σ = σ_VP/α_VP
    expected = get_sigmas_karras(10, float(sigmas[-1]), float(sigmas[0]), KARRAS_RHO)
    torch.testing.assert_close(sigmas, expected, rtol=1e-10, atol=0)


def test_logsnr_nodes_are_uniform_in_log_snr(schedule):
    lam = schedule.lambda_(timesteps(schedule, 8, SCHEDULES["logsnr"]))
    torch.testing.assert_close(lam.diff(), lam.diff().mean().expand(8), rtol=1e-10, atol=0)


@pytest.mark.parametrize("spacing", ["time_uniform", "logSNR", "karras"])
def test_an_untrained_learned_schedule_is_its_start(schedule, spacing):
    start = timesteps(schedule, 6, spacing)
    torch.testing.assert_close(LearnedSchedule(schedule, start)(), start, rtol=1e-10, atol=0)


def test_learned_nodes_stay_ordered_with_fixed_ends_for_any_weights(schedule):
    learned = LearnedSchedule(schedule, timesteps(schedule, 5, "logSNR"))
    with torch.no_grad():
        learned.logits.copy_(torch.tensor([8.0, -8.0, 0.0, 3.0, -20.0], dtype=learned.logits.dtype))
        ts = learned()
    assert float(ts[0]) == 1.0 and float(ts[-1]) == schedule.t_min
    assert bool((ts.diff() < 0).all())


def test_learned_nodes_are_differentiable_through_a_solve(schedule):
    learned = LearnedSchedule(schedule, timesteps(schedule, 4, "time_uniform"))
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    ddim(ExactEps(gmm3d(), schedule), x, learned()).square().sum().backward()
    assert learned.logits.grad is not None and bool(learned.logits.grad.abs().sum() > 0)


@pytest.mark.parametrize("name", ["ddim-4+ld3@exact", "dpm-solver++-3m-5+ld3@exact", "edm-heun-5+ld3@exact"])
def test_learned_schedule_beats_its_start_on_its_batch_and_is_evaluated_held_out(name):
    ctx = context()
    resolve(name).fit(gmm3d(), ctx)
    (record,) = [m for m in ctx.models if m["kind"] == "ld3-schedule"]
    assert record["source"] == "trained" and record["train_seconds"] > 0
    assert record["train_loss"] <= record["train_loss_start"] == record["history"]["loss"][0]
    assert record["train_loss"] == min(record["history"]["loss"])
    assert len(record["history"]["loss"]) == SCHEDULE_BUDGETS["smoke"]["iterations"] + 1
    assert ctx.artifacts["nodes"] == record["nodes"] and ctx.artifacts["schedule"] == "ld3"
    # Held-out: a fresh batch from its own stream, not the training draws, scored with the learned nodes.
    sampler = resolve(name)
    labels = (
        "gmm3d", sampler.solver.__name__, str(sampler.n_steps), '{"kind": "exact"}'
    )
    budget = SCHEDULE_BUDGETS["smoke"]
    z_train = torch.randn(budget["batch"], 3, generator=ctx.generator("ld3-train", *labels), dtype=F64)
    z_heldout = torch.randn(budget["heldout"], 3, generator=ctx.generator("ld3-heldout", *labels), dtype=F64)
    assert not torch.equal(z_train[:8], z_heldout[:8])
    eps = ExactEps(gmm3d())
    reference = teacher_solve(eps, z_heldout, budget["teacher_steps"], denoise=name.startswith("edm-heun"))
    nodes = torch.tensor(record["nodes"], dtype=F64)
    heldout = float(schedule_loss(sampler.solver, eps, nodes, z_heldout, reference))
    assert heldout == pytest.approx(record["heldout_loss"], rel=1e-9)
    start = timesteps(eps.schedule, sampler.n_steps, sampler.spacing)
    assert float(schedule_loss(sampler.solver, eps, start, z_heldout, reference)) == pytest.approx(
        record["heldout_loss_start"], rel=1e-6
    )


def test_learned_schedule_is_reproducible_from_its_seed():
    nodes = []
    for seed in (0, 0, 1):
        ctx = context(seed=seed)
        resolve("ddim-3+ld3@exact").fit(gmm3d(), ctx)
        nodes.append(ctx.artifacts["nodes"])
    assert nodes[0] == nodes[1] and nodes[0] != nodes[2]


def test_learned_schedule_is_cached_and_keyed_by_solver_steps_and_eps(tmp_path):
    first = context(ModelCache(tmp_path))
    resolve("ddim-3+ld3@exact").fit(gmm3d(), first)
    again = context(ModelCache(tmp_path))  # a later run: loads, no retraining
    resolve("ddim-3+ld3@exact").fit(gmm3d(), again)
    (loaded,) = [m for m in again.models if m["kind"] == "ld3-schedule"]
    assert loaded["source"] == "disk" and again.artifacts["nodes"] == first.artifacts["nodes"]
    (trained,) = [m for m in first.models if m["kind"] == "ld3-schedule"]
    assert loaded["id"] == trained["id"] and loaded["train_seconds"] == trained["train_seconds"]
    ids = {trained["id"]}
    for other in ("ddim-4+ld3@exact", "dpm-solver++-2m-3+ld3@exact"):
        ctx = context(ModelCache(tmp_path))
        resolve(other).fit(gmm3d(), ctx)
        (record,) = [m for m in ctx.models if m["kind"] == "ld3-schedule"]
        assert record["source"] == "trained"
        ids.add(record["id"])
    assert len(ids) == 3


def test_learned_schedule_on_the_eps_net_is_keyed_by_it(tmp_path):
    ctx = context(ModelCache(tmp_path))
    resolve("ddim-3+ld3@paper-eps").fit(gmm3d(), ctx)
    kinds = [m["kind"] for m in ctx.models]
    assert kinds == ["epsnet", "ld3-schedule"]
    exact = context(ModelCache(tmp_path))
    resolve("ddim-3+ld3@exact").fit(gmm3d(), exact)
    assert [m["id"] for m in exact.models if m["kind"] == "ld3-schedule"] != [ctx.models[1]["id"]]


@pytest.mark.parametrize(
    ("name", "nfe"),
    [("ddim-4+ld3@exact", 4), ("dpm-solver-heun-3+ld3@exact", 6), ("dpm-solver-2-6+karras@exact", 6),
     ("dpm-solver++-3m-5+karras@exact", 5), ("unipc-4+uniform@exact", 4), ("ipndm-5+logsnr@exact", 5),
     ("edm-heun-5+ld3@exact", 5), ("edm-heun-6+logsnr@exact", 6)],
)
def test_counted_nfe_is_the_number_in_the_name_for_every_schedule(name, nfe):
    sampler = resolve(name)
    assert sampler.expected_nfe(gmm3d()) == nfe
    sample = sampler.fit(gmm3d(), context())  # training the schedule is not counted: counting is off in fit
    with count_evaluations() as counter:
        out = sample(40, torch.Generator().manual_seed(0))
    assert out.shape == (40, 3) and torch.isfinite(out).all()
    assert counter.calls == nfe and counter.rows == nfe * 40


@pytest.mark.parametrize("suffix", SCHEDULE_SUFFIXES)
def test_schedule_names_parse_and_plain_names_keep_their_meaning(suffix):
    sampler = resolve(f"ddim-8+{suffix}@exact")
    assert (sampler.n_steps, sampler.variant, sampler.schedule) == (8, "exact", suffix)
    assert resolve(f"unipc-5+{suffix}@silu").variant == "silu"
    plain = resolve("ddim-8")
    assert (plain.schedule, plain.spacing, plain.variant) == ("", "time_uniform", "")
    assert resolve("dpm-solver++-3m-6").spacing == "logSNR" and resolve("ipndm-6").spacing == "karras"


@pytest.mark.parametrize("name", ["ddim-8+foo", "ddim-8+", "ddim-8+ld3+karras@exact", "unipc-5+Karras"])
def test_bad_schedule_suffixes_are_one_line_usage_errors(plugin_manager, name):
    registry = Registry.from_plugin_manager(plugin_manager)
    with pytest.raises(UsageError) as caught:
        registry.sampler(name)
    message = str(caught.value)
    assert "\n" not in message and name in message and "+ld3" in message


def test_bad_schedule_suffix_exits_2_before_any_work(tmp_path, capsys):
    argv = ["run", "--samplers", "ddim-8+foo@exact", "--targets", "gmm3d", "--out", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sampler 'ddim-8+foo@exact' is not available: unknown schedule '+foo'")
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
