"""Replicate seeds, common random numbers, noise floors with a spread, threads and determinism (issue 13)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from bench import hookimpl
from bench.cli import main
from bench.contracts import Sampler, Target
from bench.errors import UsageError
from bench.plan import plan_run
from bench.runner import RunConfig, load_samples, run
from bench.seeding import derive_seed
from bench.validation import check_seeds
from tests.conftest import registered

N = 200


class Prior(Sampler):
    """Returns its prior draw ``N(0, I)``; remembers each call's output per replicate seed."""

    def __init__(self, name):
        self.name, self.draws = name, {}

    def fit(self, target, ctx):
        def sample(n, generator):
            x = torch.randn(n, target.dim, generator=generator, device=generator.device)
            self.draws.setdefault(ctx.seed, []).append(x.clone())
            return x

        return sample


class TrainedShift(Sampler):
    """``N(0, I)`` plus a mean learned by a few seeded SGD steps: a cached model per training seed.

    Records the training seed and the torch settings (threads, deterministic) of each training.
    """

    name = "trained-shift"

    def __init__(self):
        self.settings = []

    def fit(self, target, ctx):
        def train(model):
            self.settings.append((ctx.seed, torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))
            generator = ctx.generator("trained-shift", target.name, device="cpu")
            optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
            for _ in range(20):
                loss = (model(torch.zeros(64, target.dim)) - target.sample(64, generator)).pow(2).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            return {"history": {}}

        model = ctx.cached_model("trained-shift", target, config={"steps": 20}, build=lambda: Shift(target.dim),
                                 train=train)

        def sample(n, generator):
            return model(torch.randn(n, target.dim, generator=generator, device=generator.device))

        return sample


class Shift(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.shift = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return x + self.shift


class Plugin:
    def __init__(self):
        self.samplers = [Prior("prior-a"), Prior("prior-b"), TrainedShift()]

    @hookimpl
    def register_samplers(self, register):
        for sampler in self.samplers:
            register(sampler)


@pytest.fixture
def plugin():
    return Plugin()


@pytest.fixture
def registry(plugin_manager, plugin):
    with registered(plugin_manager, plugin, "replicate-plugin") as registry:
        yield registry


def _config(samplers, **fields):
    # One thread: on a shared 2-core machine two OpenMP threads spin against each other (metrics ~30× slower).
    values = {"profile": "smoke", "device": "cpu", "n": N, "repeats": 1, "warmup": 0, "floor_pairs": 2, "threads": 1}
    return RunConfig(samplers, ["gmm3d"], **{**values, **fields})


# --- --seeds and the other new options -------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("3", 3), (" 2 ", 2), ("0,3,7", [0, 3, 7]), ("7, 3", [7, 3]), ("5,", [5]), (4, 4), ([2, 0], [2, 0]),
])
def test_seeds_are_a_count_or_a_list(value, expected):
    assert check_seeds(value, "--seeds") == expected


@pytest.mark.parametrize("value, phrase", [
    ("0", "--seeds 0 is not a count of seeds"),
    ("-2", "--seeds -2 is not a count of seeds"),
    ("1,1", "--seeds lists seed 1 twice"),
    ("0,-1", "--seeds holds the negative seed -1"),
    ("abc", "--seeds 'abc' is neither a count nor a list of seeds"),
    ("1,,2", "--seeds '1,,2' is not a list of integer seeds"),
    ("1.5,2", "is not a list of integer seeds"),
    (",", "is not a list of integer seeds"),
    ([], "is neither a count nor a list of seeds"),
    ([1, True], "holds True, which is not an integer seed"),
])
def test_bad_seeds_are_one_line_saying_what_is_allowed(value, phrase):
    with pytest.raises(UsageError) as info:
        check_seeds(value, "--seeds")
    message = str(info.value)
    assert phrase in message and "\n" not in message and "distinct seeds ≥ 0" in message


def test_run_config_expands_a_count_from_the_base_seed_and_defaults_to_it():
    assert _config(["prior-a"], seed=4, seeds=2).seeds == [4, 5]
    assert _config(["prior-a"], seed=4).seeds == [4]
    explicit = _config(["prior-a"], seeds=[7, 3])
    assert (explicit.seed, explicit.seeds) == (7, [7, 3]) and explicit.to_json()["seed"] == 7
    with pytest.raises(UsageError, match=r"seed = 5 contradicts seeds = \[7, 3\]"):
        _config(["prior-a"], seed=5, seeds=[7, 3])


@pytest.mark.parametrize("option, value, phrase", [
    ("--seeds", "1,1", "--seeds lists seed 1 twice"),
    ("--seeds", "0", "--seeds 0 is not a count of seeds"),
    ("--threads", "0", "--threads must be ≥ 1"),
    ("--floor-pairs", "1", "--floor-pairs must be ≥ 2"),
])
def test_cli_refuses_bad_replicate_options_before_any_work(option, value, phrase, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    out = tmp_path / "out"
    assert main(["run", "--samplers", "target-draws", "--targets", "gmm3d", option, value, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and phrase in err
    assert not out.exists()


def test_config_records_the_replicate_settings():
    config = _config(["prior-a"], seeds=2, threads=1, independent_noise=True).to_json()
    assert {key: config[key] for key in ("seed", "seeds", "independent_noise", "threads", "deterministic",
                                         "floor_pairs")} == {"seed": 0, "seeds": [0, 1], "independent_noise": True,
                                                             "threads": 1, "deterministic": True, "floor_pairs": 2}
    assert _config(["prior-a"], threads=None).threads == torch.get_num_threads()


# --- replicates --------------------------------------------------------------------------------------


def test_each_replicate_trains_its_own_models_and_rows_carry_the_seed(registry, plugin, tmp_path):
    results = run(_config(["trained-shift", "target-draws"], seed=3, seeds=2), registry, out_dir=tmp_path)
    assert [(row["sampler"], row["seed"]) for row in results["rows"]] == [
        ("trained-shift", 3), ("target-draws", 3), ("trained-shift", 4), ("target-draws", 4)]
    first, second = (row["fit"]["models"] for row in results["rows"] if row["sampler"] == "trained-shift")
    assert [model["source"] for model in first + second] == ["trained", "trained"]
    assert first[0]["id"] != second[0]["id"] and [seed for seed, *_ in plugin.samplers[2].settings] == [3, 4]
    assert [row["metrics"]["mmd2"] for row in results["rows"][:2]] != [row["metrics"]["mmd2"]
                                                                       for row in results["rows"][2:]]
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["schema"] == "pingsbench.results/2" and on_disk["config"]["seeds"] == [3, 4]
    summary = {entry["sampler"]: entry for entry in on_disk["summary"]}
    assert summary["trained-shift"]["seeds"] == [3, 4] and summary["trained-shift"]["status"] == "ok"
    low, high = (summary["trained-shift"]["metrics"]["mmd2"][key] for key in ("ci_low", "ci_high"))
    assert low <= summary["trained-shift"]["metrics"]["mmd2"]["mean"] <= high


def test_dry_run_plans_every_replicate_with_its_own_models(registry):
    plan = plan_run(_config(["trained-shift"], seeds=[5, 2]), registry)
    assert [(entry["seed"], entry["status"]) for entry in plan] == [(5, "run"), (2, "run")]
    ids = [entry["models"][0]["id"] for entry in plan]
    assert ids[0] != ids[1] and [entry["models"][0]["source"] for entry in plan] == ["train", "train"]


def test_samples_npz_keeps_the_first_seeds_points(registry, plugin, tmp_path):
    run(_config(["prior-a"], seeds=[3, 4]), registry, out_dir=tmp_path)
    kept = load_samples(tmp_path)["gmm3d/prior-a"]
    prior = plugin.samplers[0]
    np.testing.assert_array_equal(kept, prior.draws[3][0].numpy())
    assert not np.array_equal(kept, prior.draws[4][0].numpy())


class FailsForOneSeed(Target):
    """Draws fail for the reference set of replicate seed 1 only."""

    name, dim = "fails-for-seed-1", 2

    def sample(self, n, generator, dtype=torch.float32):
        if generator.initial_seed() == derive_seed(1, "reference", self.name):
            raise RuntimeError("no reference today")
        return torch.randn(n, 2, generator=generator, dtype=dtype)


def test_a_reference_set_that_fails_fails_the_rows_of_its_seed_only(plugin_manager):
    class TargetPlugin:
        @hookimpl
        def register_targets(self, register):
            register(FailsForOneSeed())

    with registered(plugin_manager, TargetPlugin(), "seed-target") as registry:
        config = RunConfig(["target-draws"], ["fails-for-seed-1"], "smoke", "cpu", n=N, repeats=1, warmup=0,
                           seeds=[0, 1, 2], floor_pairs=2, threads=1)
        rows = run(config, registry)["rows"]
    assert [(row["seed"], row["status"]) for row in rows] == [(0, "ok"), (1, "failed"), (2, "ok")]
    assert "cannot draw its reference set: RuntimeError: no reference today" in rows[1]["error"]


# --- common random numbers ---------------------------------------------------------------------------


def test_common_random_numbers_pair_the_samplers_within_a_replicate(registry, plugin):
    a, b = plugin.samplers[:2]
    rows = run(_config(["prior-a", "prior-b"], seeds=2), registry)["rows"]
    for seed in (0, 1):
        torch.testing.assert_close(a.draws[seed][0], b.draws[seed][0], rtol=0, atol=0)
    assert not torch.equal(a.draws[0][0], a.draws[1][0])  # each replicate has its own noise
    by_seed = {}
    for row in rows:
        by_seed.setdefault(row["seed"], []).append(row["metrics"])
    assert all(first == second for first, second in by_seed.values())  # same samples, same metric streams


def test_independent_noise_gives_every_sampler_its_own_stream(registry, plugin):
    a, b = plugin.samplers[:2]
    run(_config(["prior-a", "prior-b"], independent_noise=True), registry)
    assert not torch.equal(a.draws[0][0], b.draws[0][0])


# --- noise floors ------------------------------------------------------------------------------------


def test_floor_has_a_spread_and_target_draws_read_like_it(registry):
    results = run(_config(["target-draws"], seeds=2, floor_pairs=4), registry)
    assert set(results["floors"]) == {"gmm3d"}  # once per target, not per seed
    floor = results["floors"]["gmm3d"]
    assert (floor["pairs"], floor["n"], floor["seed"]) == (4, N, 0)
    assert set(floor["metrics"]) == set(results["rows"][0]["metrics"])
    # Exact draws against the reference are one more draw from the floor's distribution: each metric lies
    # in the 99.9 % prediction interval mean ± t·s·√(1 + 1/P) of the P floor pairs.
    t = stats.t.ppf(0.9995, df=floor["pairs"] - 1)
    for name, spread in floor["metrics"].items():
        values = spread["values"]
        assert len(values) == 4 and all(math.isfinite(v) for v in values)
        assert spread["mean"] == pytest.approx(np.mean(values)) and spread["std"] == pytest.approx(
            np.std(values, ddof=1))
        for row in results["rows"]:
            half_width = t * spread["std"] * math.sqrt(1 + 1 / floor["pairs"])
            assert abs(row["metrics"][name] - spread["mean"]) <= half_width, (name, row["seed"])


# --- threads and determinism -------------------------------------------------------------------------


def test_threads_and_determinism_apply_to_the_run_and_are_restored(registry, plugin):
    before_threads, before_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    threads = 2 if before_threads == 1 else 1
    results = run(_config(["trained-shift"], threads=threads), registry)
    assert plugin.samplers[2].settings == [(0, threads, True)]
    assert results["config"]["threads"] == threads and results["environment"]["torch_threads"] == threads
    assert results["config"]["deterministic"] is True
    assert torch.get_num_threads() == before_threads
    assert torch.are_deterministic_algorithms_enabled() == before_deterministic


def test_same_seeds_and_threads_give_identical_numbers(plugin_manager):
    def once():
        with registered(plugin_manager, Plugin(), "replicate-plugin") as registry:
            rows = run(_config(["trained-shift", "prior-a"], seeds=2, threads=1), registry)["rows"]
        return [(row["sampler"], row["seed"], row["nfe"], row["metrics"]) for row in rows]

    first, second = once(), once()
    assert first == second and len({json.dumps(metrics) for *_, metrics in first}) == 4
