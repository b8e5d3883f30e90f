"""Run options that change how sampling runs (issue 18): --compile warmed outside the timed region, --dtype as the
precision of sampling from float32-trained models, --cuda-graphs with its eager fallback (CUDA faked)."""

from __future__ import annotations

import contextlib

import pytest
import torch

import bench.cuda_graphs
import bench.runner
from bench import hookimpl, testing
from bench.cache import ModelCache
from bench.cli import main
from bench.contracts import Sampler
from bench.errors import UsageError
from bench.profiles import get_profile
from bench.runner import PairSession, RunConfig, prepare_target, run_pair
from bench.timing import Timer
from targets.mixtures import gmm3d

pytestmark = pytest.mark.usefixtures("single_thread")


def config(**changes) -> RunConfig:
    values = dict(samplers=["linear"], targets=["gmm3d"], profile=get_profile("smoke"), device=torch.device("cpu"),
                  n=100, repeats=2, warmup=0, threads=1)
    return RunConfig(**{**values, **changes})


class Linear(Sampler):
    """One linear layer on N(0, I) noise; notes the dtype it was fitted in and each call's output dtype."""

    name = "linear"

    def __init__(self):
        self.fitted_in, self.sampled = None, []

    def fit(self, target, ctx):
        self.fitted_in = ctx.dtype
        layer = torch.nn.Linear(target.dim, target.dim).to(ctx.dtype)

        def sample(n, generator):
            out = layer(torch.randn(n, target.dim, generator=generator, dtype=ctx.dtype))
            self.sampled.append(out.dtype)
            return out

        return sample


LINEAR = Linear()


class Plugin:
    @hookimpl
    def register_samplers(self, register):
        register(LINEAR)


def test_compile_happens_before_the_clock_runs_even_without_warmup(monkeypatch):
    events = []

    def fake_compile(fn):
        events.append("torch.compile")
        shapes = set()

        def compiled(n, generator):
            events.append(("call" if n in shapes else "compile+call", n))  # a new shape compiles
            shapes.add(n)
            return fn(n, generator)

        return compiled

    def clock():
        events.append("clock")
        return float(len(events))  # advancing: every block takes time

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(bench.runner, "Timer", lambda device, threads: Timer(device, threads, clock=clock))
    cfg = config(compile=True, batch_sizes=[10])
    target = gmm3d()
    with testing.registered(Plugin()) as registry:
        row = run_pair("linear", target, prepare_target(target, cfg), registry, ModelCache(None), cfg, {})
    assert row["status"] == "ok", row["error"]
    # Per size: the compiling call, untimed; then two timed blocks of one call each (no warm-up).
    expected = ["torch.compile"]
    for n in (10, 100):
        expected += [("compile+call", n), *["clock", ("call", n), "clock"] * 2]
    assert events == expected


def test_bfloat16_samples_under_autocast_from_models_trained_in_float32():
    target = gmm3d()
    cfg = config(dtype="bfloat16", batch_sizes=[10])
    LINEAR.sampled.clear()
    with testing.registered(Plugin()) as registry:
        row = run_pair("linear", target, prepare_target(target, cfg), registry, ModelCache(None), cfg, {})
    assert row["status"] == "ok", row["error"]
    assert row["dtype"] == "bfloat16" and LINEAR.fitted_in == torch.float32
    assert set(LINEAR.sampled) == {torch.bfloat16} and len(LINEAR.sampled) == 1 + 2 + 2  # fidelity, 2 sizes × 2
    assert cfg.to_json()["dtype"] == "bfloat16" and cfg.to_json()["optimizations"]["amp"] is True
    assert config().to_json()["optimizations"]["amp"] is False


def test_a_bfloat16_diffusion_row_shares_the_float32_model_and_records_its_dtype(plugin_manager):
    from bench.registry import Registry

    registry = Registry.from_plugin_manager(plugin_manager)
    target, cache = gmm3d(), ModelCache(None)
    float32 = config(samplers=["ddim-3"], n=200)
    bfloat16 = config(samplers=["ddim-3"], n=200, dtype=torch.bfloat16)
    sampler = registry.sampler("ddim-3")
    trained = PairSession.fit(sampler, target, float32, cache)
    row = run_pair("ddim-3", target, prepare_target(target, bfloat16), registry, cache, bfloat16, {})
    assert row["status"] == "ok", row["error"]
    assert row["dtype"] == "bfloat16" and row["nfe"] == 3
    (model,) = row["fit"]["models"]
    assert model["id"] == trained.ctx.models[0]["id"] and model["source"] == "memory"  # not retrained
    samples32, _ = trained.sample_counted()
    samples16, _ = PairSession.fit(sampler, target, bfloat16, cache).sample_counted()
    assert not torch.equal(samples16, samples32)  # the ε-net's products ran in bfloat16


def test_a_run_turns_tf32_off_and_gives_the_process_its_setting_back():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with bench.runner.run_settings(config()):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def test_the_header_says_tf32_off_where_the_environment_recorded_it():
    from bench.report.markdown import environment_lines
    from tests.test_report_v2 import _document, _row

    document = _document([_row("pings", 0, 1e-3, 0.55)], [0])
    assert "TF32" not in environment_lines(document)[0]  # a CPU run records none
    document["environment"]["tf32"] = False
    assert environment_lines(document)[0].endswith(", TF32 off")


def test_cuda_graphs_need_a_cuda_device(tmp_path, capsys):
    with pytest.raises(UsageError, match="CUDA graphs need a CUDA device, and the run's device is cpu"):
        config(cuda_graphs=True)
    out = tmp_path / "out"
    assert main(["run", "--device", "cpu", "--cuda-graphs", "--profile", "smoke", "--no-cache", "--out", str(out)]) == 2
    assert "error: CUDA graphs need a CUDA device" in capsys.readouterr().err and not out.exists()


def _graph_row(monkeypatch, fake_capture):
    monkeypatch.setattr(bench.cuda_graphs, "capture", fake_capture)
    cfg = config(batch_sizes=[10])
    cfg.cuda_graphs = True  # faked: the device stays the CPU, capture is the fake
    target = gmm3d()
    with testing.registered(Plugin()) as registry:
        return run_pair("linear", target, prepare_target(target, cfg), registry, ModelCache(None), cfg, {})


def test_a_sampler_that_cannot_be_captured_is_timed_eagerly_with_the_reason_in_its_row(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    row = _graph_row(monkeypatch, refuse)
    assert row["status"] == "ok", row["error"]
    for entry in row["latency_by_n"].values():
        assert entry["cuda_graph"] == "eager: RuntimeError: operation not permitted when stream is capturing"
        assert entry["median"] > 0
    assert "cuda_graph" not in row["latency_ms"]  # the timing summary alone; the status is in latency_by_n


def test_a_captured_call_is_what_gets_timed(monkeypatch):
    replays = []

    def fake_capture(sample, n, seed, device, precision):
        return lambda: replays.append(n)

    row = _graph_row(monkeypatch, fake_capture)
    assert row["status"] == "ok", row["error"]
    assert [entry["cuda_graph"] for entry in row["latency_by_n"].values()] == ["captured", "captured"]
    assert replays == [10, 10, 100, 100]  # two timed blocks of one replay per size


def test_capture_warms_up_on_a_side_stream_captures_once_and_reseeds_before_every_replay(monkeypatch):
    events = []

    class FakeGraph:
        def register_generator_state(self, generator):
            events.append("register")
            self.generator = generator

        def replay(self):  # what a replay draws first shows the generator's state
            events.append(("replay", torch.rand(1, generator=self.generator).item()))

    class FakeStream:
        def __init__(self, device=None):
            pass

        def wait_stream(self, other):
            events.append("wait")

    @contextlib.contextmanager
    def marked(begin, end):
        events.append(begin)
        yield
        events.append(end)

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: marked("side stream", "main stream"))
    monkeypatch.setattr(torch.cuda, "graph", lambda graph: marked("capture", "captured"))
    output = torch.zeros(2)

    def sample(n, generator):
        events.append(("call", n, torch.rand(1, generator=generator).item()))
        return output

    replay = bench.cuda_graphs.capture(sample, 4, 7, torch.device("cpu"), contextlib.nullcontext)
    first = torch.rand(1, generator=torch.Generator().manual_seed(7)).item()
    call = ("call", 4, first)
    assert events == ["register", "wait", "side stream", call, call, call, "main stream", "wait", "capture", call,
                      "captured"]
    events.clear()
    assert replay() is output and replay() is output
    assert events == [("replay", first)] * 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_captured_sampler_replays_what_an_eager_call_seeded_alike_draws():
    device = torch.device("cuda")
    weight = torch.randn(3, 3, device=device)

    def sample(n, generator):
        return torch.tanh(torch.randn(n, 3, generator=generator, device=device) @ weight)

    replay = bench.cuda_graphs.capture(sample, 64, 11, device, contextlib.nullcontext)
    eager = sample(64, torch.Generator(device=device).manual_seed(11))
    torch.testing.assert_close(replay().clone(), eager)
    torch.testing.assert_close(replay().clone(), eager)  # reseeded: the same draws again
