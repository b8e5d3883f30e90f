"""`pingsbench report` over several results files (bench.results.merge) and the fidelity-versus-dimension view."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch

from bench.cli import load_registry, main
from bench.profiles import get_profile
from bench.errors import UsageError
from bench.report import family_stem, merge_samples
from bench.report.markdown import dimension_section, interval_cell, render
from bench.results import COMPARABLE_SETTINGS, merge, summarize
from bench.runner import RunConfig, run

ENVIRONMENT = {"device": "cpu", "device_name": "x86_64", "dtype": "float32", "torch": "2.13.0", "torch_threads": 2,
               "python": "3.11", "platform": "linux", "pingsbench": "0.1.0"}
INFO = {"mmd2": {"label": "MMD²", "better": "lower", "description": "kernel bank"},
        "c2st": {"label": "C2ST", "better": "lower", "description": "classifier accuracy"}}


def _row(sampler, target, seed, mmd2):
    return {"sampler": sampler, "target": target, "seed": seed, "status": "ok", "error": None, "n": 100, "nfe": 1.0,
            "warnings": [], "latency_ms": {"mean": 1.0, "std": 0.1, "median": 1.0, "min": 0.9},
            "metrics": {"mmd2": mmd2, "c2st": 0.5 + mmd2}, "fit": {"models": []}}


def _floor(seed, mean):
    return {"pairs": 2, "n": 100, "seed": seed, "metrics": {"mmd2": {"mean": mean, "std": 1e-4, "values": [mean] * 2}}}


def _document(targets, seeds, samplers=("a", "b"), **config):
    rows = [_row(s, t, seed, 1e-3 * (i + 1) * (seed + 1) * (j + 1))
            for j, t in enumerate(targets) for seed in seeds for i, s in enumerate(samplers)]
    return {
        "schema": "pingsbench.results/2", "created": "2026-11-30T10:00:00+0000", "environment": dict(ENVIRONMENT),
        "config": {"profile": "smoke", "n": 100, "seed": seeds[0], "seeds": list(seeds), "repeats": 1, "warmup": 0,
                   "threads": 1, "deterministic": True, "independent_noise": False, "floor_pairs": 2,
                   "dtype": "float32", "device": "cpu", "optimizations": {"torch_compile": False},
                   "samplers": list(samplers), "targets": list(targets), "cache_dir": "/tmp/x", **config},
        "metric_info": INFO,
        "floors": {t: _floor(seeds[0], 1e-4 * (j + 1)) for j, t in enumerate(targets)},
        "rows": rows,
    }


def test_disjoint_targets_concatenate_rows_union_settings_and_record_each_run():
    first, second = _document(["t1"], [0, 1]), _document(["t2"], [0, 1], samplers=("b", "c"), cache_dir="/tmp/y")
    merged = merge([first, second], ["A/results.json", "B/results.json"])
    assert merged["schema"] == "pingsbench.results/2"
    assert len(merged["rows"]) == len(first["rows"]) + len(second["rows"])
    assert [row["merged_from"] for row in merged["rows"]] == [0] * 4 + [1] * 4
    assert merged["config"]["samplers"] == ["a", "b", "c"] and merged["config"]["targets"] == ["t1", "t2"]
    assert merged["config"]["seeds"] == [0, 1] and merged["config"]["seed"] == 0
    assert "cache_dir" not in merged["config"]  # differs between the runs: kept only in each source
    assert merged["floors"] == {"t1": first["floors"]["t1"], "t2": second["floors"]["t2"]}
    assert merged["summary"] == summarize(first["rows"] + second["rows"], ["a", "b", "c"], ["t1", "t2"])
    assert [(s["path"], s["targets"], s["seeds"], s["rows"]) for s in merged["sources"]] == [
        ("A/results.json", ["t1"], [0, 1], 4), ("B/results.json", ["t2"], [0, 1], 4)]
    assert merged["sources"][1]["config"]["cache_dir"] == "/tmp/y" and merged["sources_differ"] == []
    assert "merges 2 runs" in render(merged) and "same environment" in render(merged)


def test_runs_of_other_seeds_keep_the_first_runs_floor_as_one_run_over_all_seeds_would():
    whole = _document(["t1"], [0, 1])
    first, second = _document(["t1"], [0]), _document(["t1"], [1])
    second["floors"]["t1"] = _floor(1, 7e-4)  # drawn from that run's base seed
    merged = merge([first, second], ["A", "B"])
    assert merged["floors"] == whole["floors"] and merged["config"]["seeds"] == [0, 1]
    assert merged["summary"] == summarize(whole["rows"], ["a", "b"], ["t1"])


def test_a_row_in_two_runs_is_refused_naming_it_and_both_files():
    first, second = _document(["t1"], [0, 1]), _document(["t1"], [1, 2])
    with pytest.raises(UsageError, match=r"a on t1 with seed 1 is in both A/results.json and B/results.json"):
        merge([first, second], ["A/results.json", "B/results.json"])


@pytest.mark.parametrize("key, value", [("profile", "quick"), ("n", 200), ("threads", 2), ("device", "cuda:0"),
                                        ("repeats", 5), ("optimizations", {"torch_compile": True}),
                                        ("independent_noise", True), ("floor_pairs", 5), ("dtype", "float64")])
def test_a_setting_that_makes_rows_incomparable_is_refused_naming_key_and_values(key, value):
    assert key in COMPARABLE_SETTINGS
    first, second = _document(["t1"], [0]), _document(["t2"], [0], **{key: value})
    with pytest.raises(UsageError) as raised:
        merge([first, second], ["A", "B"])
    assert f"differ in the setting {key!r}" in str(raised.value) and json.dumps(value, sort_keys=True) in str(raised.value)


def test_devices_agree_by_type_and_other_environments_are_reported():
    first, second = _document(["t1"], [0], device="cuda:0"), _document(["t2"], [0], device="cuda:1")
    second["environment"]["device_name"] = "NVIDIA H200"
    merged = merge([first, second], ["A", "B"])
    assert merged["sources_differ"] == ["device_name"]
    header = render(merged)
    assert "different machines or software (device_name: x86_64 / NVIDIA H200)" in header


def test_floors_of_one_target_from_one_seed_must_be_equal():
    first, second = _document(["t1"], [0], samplers=("a",)), _document(["t1"], [0], samplers=("b",))
    assert merge([first, second], ["A", "B"])["floors"]["t1"] == first["floors"]["t1"]
    second["floors"]["t1"] = _floor(0, 3e-4)
    with pytest.raises(UsageError, match="noise floors of t1 from seed 0 differ between A and B"):
        merge([first, second], ["A", "B"])


def test_a_merged_document_merges_again_with_its_runs_flattened():
    docs = [_document([t], [0]) for t in ("t1", "t2", "t3")]
    once = merge(docs, ["A", "B", "C"])
    twice = merge([merge(docs[:2], ["A", "B"]), docs[2]], ["AB", "C"])
    assert twice["rows"] == once["rows"] and twice["summary"] == once["summary"]
    assert [s["path"] for s in twice["sources"]] == ["A", "B", "C"]


def test_samples_take_each_pair_from_the_first_run_that_has_it():
    first = {"t/reference": np.zeros((2, 2)), "t/a": np.zeros((2, 2))}
    second = {"t/reference": np.ones((2, 2)), "t/b": np.ones((2, 2)), "u/a": np.ones((3, 2))}
    merged = merge_samples([first, second])
    assert sorted(merged) == ["t/a", "t/b", "t/reference", "u/a"] and not merged["t/reference"].any()


def test_family_stem_names_the_figure_after_the_pattern():
    assert [family_stem(p) for p in ("gmm-<d>", "studentt-mix-<d>", "foo-<d>-bar", "<d>")] == [
        "gmm", "studentt-mix", "foo-bar", "family"]


def test_dimension_section_cells_are_the_summary_intervals_with_a_floor_row_per_d():
    rows = [_row(s, f"gmm-{d}", seed, 1e-3 * d * (seed + 1) * (i + 1)) for d in (2, 8) for seed in (0, 1)
            for i, s in enumerate(("target-draws", "a"))]
    summary = summarize(rows)
    floors = {f"gmm-{d}": _floor(0, 1e-4 * d) for d in (2, 8)}
    text = dimension_section("gmm-<d>", [(2, "gmm-2"), (8, "gmm-8")], summary, INFO, floors, "gmm_dimension.png")
    tables = _tables(text)
    for metric, spec in (("mmd2", ".2e"), ("c2st", ".3f")):
        table = tables[INFO[metric]["label"]]
        for entry in summary:
            column = f"d = {entry['target'].removeprefix('gmm-')}"
            assert table[entry["sampler"]][column] == interval_cell(entry["metrics"][metric], spec)
    assert tables["MMD²"]["*noise floor (2 pairs, mean ± std)*"] == {"d = 2": "2.00e-04 ± 1.0e-04",
                                                                     "d = 8": "8.00e-04 ± 1.0e-04"}
    assert "(gmm_dimension.png)" in text


def _tables(text):
    """``{title: {row label: {column: cell}}}`` of the bold-titled Markdown tables in ``text``."""
    tables, title, header = {}, None, None
    for line in text.splitlines():
        if line.startswith("**"):
            title, header = line.split("**")[1].rstrip(" ↓↑"), None
        elif line.startswith("|") and not line.startswith("|--"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if header is None:
                header = cells
            else:
                tables.setdefault(title, {})[cells[0]] = dict(zip(header[1:], cells[1:]))
    return tables


# End to end: real smoke runs (exact-score solvers: nothing is trained), merged through the CLI.
SAMPLERS = ["target-draws", "ddim-10@exact", "ddim-20@exact"]
#: Summary fields that are timings (differ between runs of the same rows).
TIMED = ("latency_ms", "latency_by_n", "train_seconds")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run over gmm-2 and gmm-4, and the same two targets run separately (results.json and samples.npz each)."""
    root = tmp_path_factory.mktemp("runs")
    registry = load_registry()
    for name, targets in (("both", ["gmm-2", "gmm-4"]), ("a", ["gmm-2"]), ("b", ["gmm-4"])):
        config = RunConfig(SAMPLERS, targets, get_profile("smoke"), torch.device("cpu"), n=200, repeats=1, warmup=0,
                           threads=1, floor_pairs=2)
        assert all(row["status"] == "ok" for row in run(config, registry, out_dir=root / name)["rows"])
    return root


def _untimed(summary):
    return [{k: v for k, v in entry.items() if k not in TIMED} for entry in summary]


def test_merging_two_runs_of_disjoint_targets_equals_one_run_of_both(runs, capsys):
    out = runs / "merged"
    assert main(["report", str(runs / "a" / "results.json"), str(runs / "b"), "--out", str(out)]) == 0
    merged, both = (json.loads((runs / name / "results.json").read_text()) for name in ("merged", "both"))
    assert _untimed(merged["summary"]) == _untimed(both["summary"])
    assert merged["floors"] == both["floors"]
    assert {k: merged["config"][k] for k in ("samplers", "targets", "seeds")} == {
        k: both["config"][k] for k in ("samplers", "targets", "seeds")}
    with np.load(out / "samples.npz") as merged_samples, np.load(runs / "both" / "samples.npz") as both_samples:
        assert sorted(merged_samples.files) == sorted(both_samples.files)
        assert all(np.array_equal(merged_samples[key], both_samples[key]) for key in both_samples.files)
    board = (out / "leaderboard.md").read_text()
    assert "the leaderboard merges 2 runs" in board and "same environment" in board
    assert "(gmm-2_samples.png)" in board and "(gmm-4_samples.png)" in board


def test_the_dimension_view_appears_iff_two_members_of_a_family_are_present(runs, capsys):
    if not (runs / "merged" / "results.json").exists():
        assert main(["report", str(runs / "a"), str(runs / "b"), "--out", str(runs / "merged")]) == 0
    merged = json.loads((runs / "merged" / "results.json").read_text())
    board = (runs / "merged" / "leaderboard.md").read_text()
    assert (runs / "merged" / "gmm_dimension.png").stat().st_size > 20_000
    section = board[board.index("## `gmm-<d>`: fidelity against dimension"):board.index("## Metrics")]
    assert board.index("## gmm-4") < board.index("## `gmm-<d>`: fidelity against dimension")
    tables = _tables(section)
    for entry in merged["summary"]:
        column = f"d = {entry['target'].removeprefix('gmm-')}"
        assert tables["MMD²"][entry["sampler"]][column] == interval_cell(entry["metrics"]["mmd2"], ".2e")
        assert tables["C2ST"][entry["sampler"]][column] == interval_cell(entry["metrics"]["c2st"], ".3f")
        assert tables["train s"][entry["sampler"]][column] == f"{entry['train_seconds']:.1f}"

    assert main(["report", str(runs / "a")]) == 0  # one member only
    assert "fidelity against dimension" not in (runs / "a" / "leaderboard.md").read_text()
    assert not (runs / "a" / "gmm_dimension.png").exists()


def test_a_row_in_two_files_exits_2_in_one_line_naming_both(runs, capsys):
    capsys.readouterr()
    out = runs / "refused"
    assert main(["report", str(runs / "a"), str(runs / "both"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert str(runs / "a" / "results.json") in err and str(runs / "both" / "results.json") in err
    assert not out.exists()


def test_a_conflicting_setting_exits_2_naming_the_key(runs, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(runs / "b", other)
    document = json.loads((other / "results.json").read_text())
    document["config"]["threads"] = 2
    (other / "results.json").write_text(json.dumps(document))
    capsys.readouterr()
    assert main(["report", str(runs / "a"), str(other), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "differ in the setting 'threads'" in err and ": 1;" in err and ": 2)" in err


def test_several_files_need_out_and_out_must_not_hold_an_input(runs, capsys):
    capsys.readouterr()
    assert main(["report", str(runs / "a"), str(runs / "b")]) == 2
    assert "give --out DIR" in capsys.readouterr().err
    before = (runs / "a" / "results.json").read_text()
    assert main(["report", str(runs / "a"), str(runs / "b"), "--out", str(runs / "a")]) == 2
    assert "would overwrite" in capsys.readouterr().err
    assert (runs / "a" / "results.json").read_text() == before


def test_merge_does_not_modify_its_inputs():
    first, second = _document(["t1"], [0]), _document(["t2"], [0])
    copies = copy.deepcopy([first, second])
    merge([first, second], ["A", "B"])
    assert [first, second] == copies
