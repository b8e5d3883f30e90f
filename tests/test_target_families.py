"""Target families (``gmm-<d>``, ``funnel-<d>``, ...): resolution, refusal, listing, selection, overlaps."""

from __future__ import annotations

import json
import re

import pytest

from bench import hookimpl
from bench.cli import main
from bench.contracts import TargetFamily
from bench.identity import target_identity
from bench.registry import DuplicateNameError, PluginContractError, UnknownNameError
from bench.validation import select_targets
from targets.funnel import Funnel
from targets.mixtures import gmm_d

FAMILIES = {"gmm-<d>": "gmm-", "studentt-mix-<d>": "studentt-mix-", "funnel-<d>": "funnel-",
            "manywell-<d>": "manywell-"}


@pytest.fixture
def registry(pingsbench_registry):
    return pingsbench_registry()


@pytest.mark.parametrize("name, dim", [("gmm-1", 1), ("gmm-16", 16), ("gmm-5", 5), ("studentt-mix-7", 7),
                                       ("funnel-2", 2), ("funnel-33", 33), ("manywell-2", 2), ("manywell-12", 12)])
def test_any_valid_dimension_resolves_to_one_object(registry, name, dim):
    target = registry.target(name)
    assert (target.name, target.dim) == (name, dim)
    assert registry.target(name) is target


def test_a_member_is_the_same_distribution_in_every_registry(pingsbench_registry):
    first, second = pingsbench_registry().target("gmm-16"), gmm_d(16)
    assert first is not second and target_identity(first) == target_identity(second)
    assert target_identity(first) != target_identity(gmm_d(15))


@pytest.mark.parametrize("name, rule", [
    ("manywell-7", "manywell-<d> takes an even d"),
    ("manywell-0", "manywell-<d> takes an even d"),
    ("gmm-0", "gmm-<d> takes a d with 1 ≤ d ≤ 1024"),
    ("gmm-08", "without leading zeros"),
    ("funnel-1", "funnel-<d> takes a d with 2 ≤ d"),
    ("studentt-mix-5000", "studentt-mix-<d> takes a d with 1 ≤ d ≤ 1024"),
])
def test_invalid_dimension_is_a_one_line_usage_error(name, rule, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    status = main(["run", "--targets", name, "--samplers", "target-draws", "--dry-run", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.startswith(f"error: target {name!r} is not available: ")
    assert rule in err


def test_unknown_target_lists_families_and_suggests_members(registry):
    with pytest.raises(UnknownNameError, match=r"Did you mean funnel-10[,?].*Available targets: .*funnel-<d>.*gmm3d"):
        registry.target("funel-10")


def test_list_json_shows_families_with_pattern_null_dim_and_defaults(capsys, monkeypatch):
    monkeypatch.setenv("PINGSBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert main(["list", "--json"]) == 0
    targets = {t["name"]: t for t in json.loads(capsys.readouterr().out)["targets"]}
    for pattern in FAMILIES:
        assert targets[pattern]["dim"] is None and targets[pattern]["defaults"]
    assert "studentt-mix-3" in targets["studentt-mix-<d>"]["defaults"]
    assert {"gmm3d", "dho", "gmm3d-many", "gmm3d-aniso"} <= set(targets)
    assert targets["gmm3d-aniso"]["dim"] == 3


def test_default_run_keeps_gmm3d_and_dho_and_all_adds_every_target(registry):
    assert select_targets(None, registry) == ["gmm3d", "dho"]
    everything = select_targets(["all"], registry)
    assert everything[:4] == ["gmm3d", "gmm3d-many", "gmm3d-aniso", "dho"]
    for entry in registry.target_families.values():
        assert set(entry.obj.defaults) <= set(everything)
    assert len(everything) == len(set(everything))
    for name in everything:
        registry.target(name)  # every default builds
    assert select_targets(["gmm-<d>", "gmm-8", "funnel-3"], registry) == ["gmm-2", "gmm-8", "gmm-32", "gmm-64",
                                                                          "funnel-3"]


class _Family(TargetFamily):
    def __init__(self, pattern, regex, defaults=(), build=None):
        self.pattern, self.regex, self.defaults = pattern, re.compile(regex), tuple(defaults)
        self._build = build or (lambda name, match: Funnel(int(match.group("d"))))

    def build(self, name, match):
        return self._build(name, match)


def _plugin(*objects):
    class Plugin:
        @hookimpl
        def register_targets(self, register):
            for obj in objects:
                register(obj)

    return Plugin()


def test_concrete_target_equal_to_a_family_member_is_one_target(pingsbench_registry):
    twin = gmm_d(4)
    registry = pingsbench_registry(_plugin(twin))
    assert registry.target("gmm-4") is twin
    assert select_targets(["all"], registry).count("gmm-4") <= 1


def test_concrete_target_differing_from_the_family_member_is_a_duplicate(pingsbench_registry):
    impostor = gmm_d(5)
    impostor.name = "gmm-4"
    with pytest.raises(DuplicateNameError, match=r"'gmm-4' .*family 'gmm-<d>'.*another distribution"):
        pingsbench_registry(_plugin(impostor))


def test_overlapping_target_families_are_refused_naming_both(pingsbench_registry):
    with pytest.raises(DuplicateNameError, match=r"'funnel<d>'.*'funnel-<d>'.*overlap: both match 'funnel-10'"):
        pingsbench_registry(_plugin(_Family("funnel<d>", r"funnel-?(?P<d>\d+)", ["funnel3"])))


def test_family_refusing_its_own_default_breaks_its_contract(pingsbench_registry):
    def refuse(name, match):
        raise ValueError("never")

    with pytest.raises(PluginContractError, match=r"lists 'cone-3' in its defaults but refuses it"):
        pingsbench_registry(_plugin(_Family("cone-<d>", r"cone-(?P<d>\d+)", ["cone-3"], build=refuse)))


def test_family_misnaming_a_member_breaks_its_contract(pingsbench_registry):
    registry = pingsbench_registry(_plugin(_Family("cone-<d>", r"cone-(?P<d>\d+)")))
    with pytest.raises(PluginContractError, match=r"not a bench.contracts.Target named 'cone-4'"):
        registry.target("cone-4")  # the family builds a target called funnel-4
