"""The report's latency-against-batch-size figure and section (issue 18), from hand-made results documents."""

from __future__ import annotations

import re

import pytest

from bench.report import write_report
from bench.report.figures import plot_scaling
from bench.report.markdown import environment_lines, latency_method, scaling_section
from bench.results import upgrade
from tests.test_report_v2 import _cells, _document, _line, _row

#: 25 samplers, as a default run has: families with numbers and variants, one-pass rows, the reference.
SAMPLERS = ["target-draws", "pings", "meanflow-1", "flow-matching-1", "rectified-flow-1", "consistency-1",
            *(f"ddim-{k}" for k in (3, 5, 10, 50)), *(f"ddim-{k}@exact" for k in (3, 5, 10)),
            *(f"dpm-solver++-2m-{k}" for k in (3, 5, 10)), *(f"dpm-solver++-2m-{k}@exact" for k in (3, 5)),
            *(f"unipc-{k}+ld3" for k in (4, 6)), *(f"flow-matching-{k}" for k in (4, 8, 16))]
SIZES = (1, 100, 10_000)


def _scaling_row(index, sampler, seed):
    row = _row(sampler, seed, 1e-3, 0.55)
    # ms per call: constant up to 100 samples, then linear, scaled per sampler and seed
    by_n = {str(n): {"median": (index + 1) * max(1.0, n / 100) * (1 + 0.1 * seed)} for n in SIZES}
    by_n["1000000"] = {"skipped": "one call estimated at 40 s (n^1.00 through n = 100, 10000) exceeds the cap of "
                                  "30 s (--latency-cap-s)", "estimated_ms": 4e4}
    row["latency_by_n"] = by_n
    row["latency_ms"] = {**row["latency_ms"], "median": by_n["100"]["median"]}
    return row


def _scaling_document(seeds=(0,)):
    document = _document([_scaling_row(i, s, seed) for i, s in enumerate(SAMPLERS) for seed in seeds], list(seeds))
    document["config"].update(batch_sizes=[*SIZES, 1_000_000], latency_cap_s=30.0,
                              timing={"method": "blocks", "min_block_seconds": 0.01})
    return document


def test_the_section_lists_every_sampler_at_every_size_with_skipped_sizes_and_their_reason():
    section = scaling_section(upgrade(_scaling_document(seeds=(0, 1))), {"gmm3d": "gmm3d_scaling.png"})
    assert "| sampler | n = 1 | n = 100 | n = 10000 | n = 1000000 | × largest/smallest |" in re.sub(" +", " ", section)
    for index, sampler in enumerate(SAMPLERS):
        cells = _cells(_line(section, sampler))
        mean_at_1 = (index + 1) * 1.05  # mean over seeds of 1 and 1.1 times the sampler's scale
        assert float(cells[1].split(" ± ")[0]) == pytest.approx(mean_at_1, rel=1e-2)
        assert cells[4] == "skipped" and cells[5] == "100×"  # 10⁴ samples cost 100× one sample here
        assert f"- `{sampler}` at n = 1000000: skipped: one call estimated at 40 s" in section
    assert "[latency and samples/s against batch size](gmm3d_scaling.png)" in section


def test_the_figure_draws_25_samplers(tmp_path):
    entries = upgrade(_scaling_document())["summary"]
    path = plot_scaling(entries, "gmm3d", tmp_path / "gmm3d_scaling.png")
    assert path.stat().st_size > 0
    assert plot_scaling(entries, "other-target", tmp_path / "none.png") is None  # nothing timed there


def test_the_report_links_the_figure_and_adds_the_section(tmp_path):
    document = _scaling_document(seeds=(0, 1))
    document["rows"] = [row for row in document["rows"] if row["sampler"] in ("pings", "ddim-3", "ddim-5")]
    leaderboard = write_report(document, tmp_path).read_text()
    assert (tmp_path / "gmm3d_scaling.png").stat().st_size > 0
    assert leaderboard.index("## Latency against batch size") < leaderboard.index("## Metrics")
    assert leaderboard.count("(gmm3d_scaling.png)") == 2  # under the target's table and in the section
    assert "batch sizes 1, 100, 10000, 1000000 (a size other than n skipped when one call is estimated over " \
           "30 s)" in leaderboard


def test_a_run_of_one_size_has_neither(tmp_path):
    document = _document([_row("pings", 0, 1e-3, 0.55)], [0])
    leaderboard = write_report(document, tmp_path).read_text()
    assert not (tmp_path / "gmm3d_scaling.png").exists() and "Latency against batch size" not in leaderboard


def test_the_header_names_the_timing_method():
    old = _document([_row("pings", 0, 1e-3, 0.55)], [0])
    assert "latency over 5 timed calls after 3 warm-up calls (device synchronized around each)" in \
           environment_lines(old)[1]
    new = _scaling_document()["config"]
    assert latency_method(new).startswith("latency: median (IQR in results.json) over 5 timed blocks after 3 "
                                          "warm-up calls, a block 10 ms or more of back-to-back calls with the "
                                          "device synchronized once per block")
