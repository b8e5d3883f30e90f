"""Rows that odd targets, odd samples and narrow dtypes must not break."""

from __future__ import annotations

import math

import pytest
import torch

from bench import hookimpl
from bench.cache import ModelCache
from bench.contracts import Sampler, Target
from bench.profiles import get_profile
from bench.runner import RunConfig, prepare_target, run, run_pair
from samplers.diffusion.schedule import DiscreteVPSchedule
from targets.mixtures import gmm3d
from tests.conftest import registered

pytestmark = pytest.mark.usefixtures("single_thread")


class Atoms(Target):
    """80 % of the mass on one point, the rest standard normal."""

    name, dim = "atoms", 3
    atom = (1.0, -2.0, 0.5)
    mass = 0.8

    def sample(self, n, generator, dtype=torch.float32):
        x = torch.randn(n, self.dim, generator=generator, device=generator.device, dtype=torch.float64)
        on_atom = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64) < self.mass
        x[on_atom] = torch.tensor(self.atom, dtype=torch.float64, device=x.device)
        return x.to(dtype)


class Scaled(Sampler):
    """Target draws times ``scale``."""

    def __init__(self, name, scale):
        self.name, self.scale = name, scale

    def fit(self, target, ctx):
        return lambda n, generator: target.sample(n, generator) * self.scale


class PartlyBeyondFloat32(Sampler):
    """float64 samples, the first third beyond float32's range (finite, so only the range check sees them)."""

    name = "beyond-float32"

    def fit(self, target, ctx):
        def sample(n, generator):
            x = target.sample(n, generator, dtype=torch.float64)
            x[: n // 3, 0] = 1e39
            return x

        return sample


class Plugin:
    @hookimpl
    def register_targets(self, register):
        register(Atoms())

    @hookimpl
    def register_samplers(self, register):
        register(Scaled("huge", 1e20))
        register(PartlyBeyondFloat32())


def test_atoms_huge_samples_and_the_floor_give_finite_rows(plugin_manager):
    config = RunConfig(["target-draws", "huge", "beyond-float32"], ["atoms", "gmm3d"], get_profile("smoke"),
                       torch.device("cpu"), n=300, repeats=1, warmup=0)
    with registered(plugin_manager, Plugin(), "odd-data") as registry:
        rows = run(config, registry)["rows"]
    by_name = {(row["target"], row["sampler"]): row for row in rows}
    for target in ("atoms", "gmm3d"):
        for sampler in ("target-draws", "huge"):
            row = by_name[target, sampler]
            assert row["status"] == "ok", row["error"]
            assert all(math.isfinite(v) for v in row["metrics"].values())
        assert by_name[target, "huge"]["metrics"]["energy"] > 1e19  # far, and measured as far
        beyond = by_name[target, "beyond-float32"]
        assert beyond["status"] == "failed" and "100 of 300 samples are out of float32's range" in beyond["error"]
    floor = by_name["atoms", "target-draws"]["metrics"]
    assert floor["mmd2_median"] < 0.05 and floor["mmd2_pvalue"] > 0.01  # exact draws look like the target


def test_bfloat16_diffusion_row_is_ok(plugin_manager):
    from bench.registry import Registry

    registry = Registry.from_plugin_manager(plugin_manager)
    config = RunConfig(["ddim-5@exact"], ["gmm3d"], get_profile("smoke"), torch.device("cpu"), n=200, repeats=1,
                       warmup=0, dtype=torch.bfloat16)
    target = gmm3d()
    row = run_pair("ddim-5@exact", target, prepare_target(target, config), registry, ModelCache(None), config, {})
    assert row["status"] == "ok", row["error"]
    assert row["nfe"] == 5 and row["metrics"]["mean_mse"] < 1.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_schedule_indexes_in_float64_whatever_the_dtype(dtype):
    schedule = DiscreteVPSchedule()
    t64 = torch.tensor([schedule.t_min, 0.5, 0.998, 0.999, 1.0], dtype=torch.float64)
    t = t64.to(dtype)  # 0.999 rounds to 1.0 in bfloat16, and so does T - 1 = 999 scaled back
    expected = schedule.log_alpha(t.to(torch.float64))
    assert schedule.log_alpha(t).dtype == dtype
    torch.testing.assert_close(schedule.log_alpha(t), expected.to(dtype), rtol=0, atol=0)
    drift, g2 = schedule.drift(t)
    torch.testing.assert_close(drift, schedule.drift(t.to(torch.float64))[0].to(dtype), rtol=0, atol=0)
    lam = schedule.lambda_(t64)
    torch.testing.assert_close(schedule.t_from_lambda(lam.to(dtype)).double(), t64, rtol=0, atol=2e-2)
