"""CPU speed options (sine/engine/acceleration.py) on a tiny random SINE: every option keeps the
inference surface and agrees with fp32; the measured choice, its per-machine cache, and the
predictor / CLI plumbing.

Agreement tolerance: every option's :func:`agreement` with fp32 (binarised semantic IoU, semantic
argmax agreement, matched instance and ID mask IoU) >= 0.98 on the synthetic pair (measured:
int8 and onnx 1.000, bf16 0.996). Timings are never asserted: the choice is tested with a
scripted clock.
"""
import copy
import json
import logging
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Instances

from sine.config import get_sine_cfg
from sine.engine import acceleration as A
from tests.tiny_model import TINY_MODEL_OPTS

TOLERANCE = 0.98
HAS_BF16 = bool(A.cpu_flags() & set(A.BF16_CPU_FLAGS))
NO_BF16 = "this CPU has neither avx512_bf16 nor amx_bf16"
try:
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401
    HAS_ONNX = True
except ImportError:
    HAS_ONNX = False
NO_ONNX = "the onnx extra is not installed (pip install -e .[onnx])"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_sine_cfg(opts=TINY_MODEL_OPTS)).eval()


@pytest.fixture(scope="module")
def pair(model):
    return A.synthetic_pair(model.pad_size)


@pytest.fixture(scope="module")
def fp32_result(model, pair):
    return A.run_pair(model, pair)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    """OUTPUT_DIR of the module: its onnx/ files are exported once for all tests."""
    return tmp_path_factory.mktemp("acceleration")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SINE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


class ScriptedClock:
    """Fake ``clock``: every timed call (two reads) lasts the next scripted duration."""

    def __init__(self, durations):
        self.durations = list(durations)
        self.reads = 0
        self.now = 0.0

    def __call__(self):
        if self.reads % 2:
            self.now += self.durations[self.reads // 2]
        self.reads += 1
        return self.now


def never_called():
    raise AssertionError("the clock was read: the option was measured")


def _shuffled_decoder(model):
    """An option that is wrong: the model with re-drawn decoder weights."""
    broken = copy.deepcopy(model)
    torch.manual_seed(123)
    for p in broken.transformer_decoder.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return broken


@pytest.fixture
def broken_option(monkeypatch):
    option = A.AccelerationOption("broken", "a fast option with wrong results",
                                  lambda model: None, lambda model, d: _shuffled_decoder(model))
    monkeypatch.setitem(A.ACCELERATIONS, "broken", option)
    return option


# ------------------------------------------------------------------------------- options
@pytest.mark.parametrize("name", [
    "fp32",
    pytest.param("bf16", marks=pytest.mark.skipif(not HAS_BF16, reason=NO_BF16)),
    "int8",
    pytest.param("onnx", marks=pytest.mark.skipif(not HAS_ONNX, reason=NO_ONNX)),
])
def test_each_option_keeps_the_surface_and_agrees_with_fp32(name, model, pair, fp32_result,
                                                            out_dir):
    vit = model.image_encoder.encoder
    fast = A.accelerate(model, name, onnx_dir=str(out_dir / "onnx"))
    result = A.run_pair(fast, pair)
    assert set(result) == set(fp32_result) == {"id", "instances", "sem_seg", "sem_seg_classes"}
    assert result["sem_seg"].dtype == torch.float32
    assert result["sem_seg"].shape == fp32_result["sem_seg"].shape
    assert torch.equal(result["sem_seg_classes"], fp32_result["sem_seg_classes"])
    for key in ("id", "instances"):
        assert isinstance(result[key], Instances)
        assert result[key].image_size == fp32_result[key].image_size == pair.output_size
    assert sorted(result["id"].pred_ids.tolist()) == sorted(fp32_result["id"].pred_ids.tolist())
    agreement = A.agreement(fp32_result, result, sem_seg_thresh=0.7)
    assert set(agreement) == {"sem_seg", "sem_seg_argmax", "instances", "id"}
    assert min(agreement.values()) >= TOLERANCE, agreement
    # The shared model is left as it was: same ViT object, float Linear layers, same results.
    assert model.image_encoder.encoder is vit
    assert all(type(m) is torch.nn.Linear for m in vit.modules()
               if isinstance(m, torch.nn.Linear))
    again = A.run_pair(model, pair)
    assert torch.equal(again["sem_seg"], fp32_result["sem_seg"])


def test_bf16_and_int8_share_the_weights_they_do_not_change(model):
    fast = A.accelerate(model, "int8")
    assert fast.transformer_decoder is model.transformer_decoder
    assert fast.image_encoder.neck is model.image_encoder.neck
    assert fast.image_encoder.encoder is not model.image_encoder.encoder
    assert fast.size_divisibility == model.size_divisibility  # the ViT's attributes still read
    assert fast.image_encoder.size_divisibility == model.image_encoder.size_divisibility


def test_unknown_option_is_a_clear_error(model):
    with pytest.raises(ValueError, match="unknown acceleration 'fp16'.*'auto'"):
        A.accelerate(model, "fp16")
    with pytest.raises(ValueError, match="unknown acceleration 'fp16'"):
        A.choose_acceleration(model, ("fp32", "fp16"), cache=False)


def test_bf16_without_the_cpu_flag_is_refused_and_skipped_by_auto(model, monkeypatch):
    monkeypatch.setattr(A, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    with pytest.raises(A.AccelerationUnavailable, match="avx512_bf16.*amx_bf16"):
        A.accelerate(model, "bf16")
    choice = A.choose_acceleration(model, ("fp32", "bf16"), cache=False, clock=never_called)
    assert choice.name == "fp32"  # nothing else can run: nothing is measured
    bf16 = {c.name: c for c in choice.candidates}["bf16"]
    assert bf16.latency_s is None and "avx512_bf16" in bf16.skipped


def test_onnx_without_the_extra_is_refused(model, monkeypatch):
    find_spec = A.importlib.util.find_spec
    monkeypatch.setattr(A.importlib.util, "find_spec",
                        lambda name: None if name == "onnxruntime" else find_spec(name))
    with pytest.raises(A.AccelerationUnavailable, match=r"onnxruntime.*pip install -e \.\[onnx\]"):
        A.accelerate(model, "onnx")


# ------------------------------------------------------------------------------- choice
def test_choose_takes_the_fastest_option_that_agrees(model, broken_option):
    # Rounds of (fp32, int8, broken): broken is fastest but wrong, int8 is faster than fp32.
    clock = ScriptedClock([1.0, 0.5, 0.1] * 3)
    choice = A.choose_acceleration(model, ("fp32", "int8", "broken"), repeats=3, clock=clock,
                                   cache=False)
    assert clock.reads == 2 * 3 * 3
    by_name = {c.name: c for c in choice.candidates}
    assert choice.name == "int8" and by_name["int8"].skipped is None
    assert [by_name[n].latency_s for n in ("fp32", "int8", "broken")] == pytest.approx(
        [1.0, 0.5, 0.1])
    assert by_name["fp32"].skipped == "slower than int8"
    assert by_name["broken"].agreement < 0.99
    assert by_name["broken"].skipped.startswith("agreement ")
    assert by_name["int8"].agreement >= TOLERANCE
    assert set(by_name["broken"].agreement_by_output) == {"sem_seg", "sem_seg_argmax",
                                                          "instances", "id"}
    table = choice.table()
    assert "| int8 | 0.5000 |" in table and "chosen" in table


def test_choose_keeps_fp32_when_nothing_is_faster(model):
    clock = ScriptedClock([0.3, 0.5, 0.2, 0.6, 0.4, 0.7])  # fp32 medians 0.3, int8 0.6
    choice = A.choose_acceleration(model, ("int8",), repeats=3, clock=clock, cache=False)
    assert choice.name == "fp32"
    assert [c.name for c in choice.candidates] == ["fp32", "int8"]  # fp32 is always measured
    assert {c.name: c.skipped for c in choice.candidates}["int8"] == "slower than fp32"


def test_a_failing_option_is_skipped_with_its_error(model, monkeypatch):
    def fails(model, onnx_dir):
        raise RuntimeError("cannot export this\nlong details")

    monkeypatch.setitem(A.ACCELERATIONS, "failing",
                        A.AccelerationOption("failing", "", lambda m: None, fails))
    choice = A.choose_acceleration(model, ("failing",), repeats=1, clock=ScriptedClock([1.0]),
                                   cache=False)
    assert choice.name == "fp32"
    assert choice.candidates[1].skipped == "failed: RuntimeError: cannot export this"


# ------------------------------------------------------------------------------- cache
def test_the_decision_is_measured_once_then_read_from_the_cache(model, cache_dir, monkeypatch):
    first = A.choose_acceleration(model, ("int8",), repeats=1, clock=ScriptedClock([1.0, 0.5]))
    assert first.name == "int8" and not first.from_cache
    path = cache_dir / "acceleration.json"
    assert A.cache_path() == str(path)
    stored = json.loads(path.read_text())
    (entry,) = stored["entries"].values()
    assert entry["key"]["threads"] == torch.get_num_threads()
    assert entry["key"]["cpu"] == A.cpu_model_name()
    monkeypatch.setattr(A, "run_pair", lambda *a: pytest.fail("measured again"))
    second = A.choose_acceleration(model, ("int8",), repeats=1, clock=never_called)
    assert second.from_cache and second.name == "int8"
    assert second.candidates == first.candidates


def test_another_thread_count_is_another_cache_entry(model, cache_dir):
    threads = torch.get_num_threads()
    A.choose_acceleration(model, ("int8",), repeats=1, clock=ScriptedClock([1.0, 0.5]))
    try:
        torch.set_num_threads(threads + 1)
        clock = ScriptedClock([0.5, 1.0])
        choice = A.choose_acceleration(model, ("int8",), repeats=1, clock=clock)
    finally:
        torch.set_num_threads(threads)
    assert clock.reads == 4 and choice.name == "fp32" and not choice.from_cache
    entries = json.loads((cache_dir / "acceleration.json").read_text())["entries"]
    assert sorted(e["key"]["threads"] for e in entries.values()) == [threads, threads + 1]


def test_a_corrupt_cache_is_ignored_with_a_warning_and_rewritten(model, cache_dir):
    cache_dir.mkdir()
    path = cache_dir / "acceleration.json"
    path.write_text('{"version": 1, "entries": {')
    clock = ScriptedClock([1.0, 0.5])
    with pytest.warns(RuntimeWarning, match="ignoring the acceleration cache"):
        choice = A.choose_acceleration(model, ("int8",), repeats=1, clock=clock)
    assert clock.reads == 4 and choice.name == "int8"
    assert len(json.loads(path.read_text())["entries"]) == 1


def test_an_interrupted_cache_write_leaves_the_old_file(model, cache_dir, monkeypatch):
    import sine.utils.io as io

    A.choose_acceleration(model, ("int8",), repeats=1, clock=ScriptedClock([1.0, 0.5]))
    path = cache_dir / "acceleration.json"
    before = path.read_text()

    def dies_half_way(obj, f, **kwargs):
        f.write('{"version": 1, "entr')
        raise KeyboardInterrupt

    monkeypatch.setattr(io.json, "dump", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        A.choose_acceleration(model, ("int8",), repeats=1, min_agreement=0.5,  # another key
                              clock=ScriptedClock([1.0, 0.5]))
    assert path.read_text() == before
    assert os.listdir(cache_dir) == ["acceleration.json"]  # no temporary file left


# ------------------------------------------------------------------------------- predictor / CLIs
def _predict(predictor, pair):
    predictor.set_reference(pair.reference.permute(1, 2, 0).numpy(), pair.masks.numpy(),
                            labels=pair.labels.tolist())
    return predictor.predict(pair.target.permute(1, 2, 0).numpy())


def test_predictor_auto_records_its_choice_and_predicts(model, pair, cache_dir, out_dir,
                                                        caplog):
    from sine.engine.predictor import InContextPredictor

    cfg = get_sine_cfg(opts=[*TINY_MODEL_OPTS, "OUTPUT_DIR", str(out_dir)])
    with caplog.at_level(logging.INFO, logger="sine.engine.predictor"):
        predictor = InContextPredictor(cfg, model=model, acceleration="auto")
    choice = predictor.acceleration_choice
    assert choice is not None and predictor.acceleration == choice.name
    assert [c.name for c in choice.candidates] == ["fp32", "bf16", "int8", "onnx"]
    assert f"acceleration 'auto' chose {choice.name!r}" in caplog.text
    assert "| option | median s |" in caplog.text
    result = _predict(predictor, pair)
    reference = _predict(InContextPredictor(cfg, model=model), pair)
    assert min(A.agreement(reference, result, 0.7).values()) >= TOLERANCE
    # Built again on this machine: the decision comes from the cache.
    assert InContextPredictor(cfg, model=model, acceleration="auto").acceleration_choice.from_cache


@pytest.mark.skipif(not HAS_ONNX, reason=NO_ONNX)
def test_predictor_backend_onnx_is_acceleration_onnx(model, pair, out_dir):
    from sine.engine.predictor import InContextPredictor
    from sine.export.onnx import OnnxSegmenter

    cfg = get_sine_cfg(opts=[*TINY_MODEL_OPTS, "OUTPUT_DIR", str(out_dir)])
    predictor = InContextPredictor(cfg, model=model, backend="onnx")
    assert isinstance(predictor.model, OnnxSegmenter) and predictor.acceleration == "onnx"
    assert predictor.backend == "onnx" and predictor.acceleration_choice is None
    assert os.path.isfile(out_dir / "onnx" / "encoder.onnx")
    assert set(_predict(predictor, pair)) == {"id", "instances", "sem_seg", "sem_seg_classes"}
    with pytest.raises(ValueError, match="backend='onnx' is acceleration='onnx'"):
        InContextPredictor(cfg, model=model, backend="onnx", acceleration="int8")
    with pytest.raises(ValueError, match="acceleration must be one of"):
        InContextPredictor(cfg, model=model, acceleration="fast")


def test_cli_flags_offer_the_registered_options(monkeypatch):
    import demo.demo as demo
    from sine.engine.predictor import ACCELERATION_CHOICES, InContextPredictor
    from sine.label import get_parser
    from sine.utils.cli import ACCELERATION_FLAG_CHOICES

    assert ACCELERATION_FLAG_CHOICES == ACCELERATION_CHOICES
    calls = []
    monkeypatch.setattr(InContextPredictor, "from_config_file",
                        classmethod(lambda cls, *a, **k: calls.append(k)))
    demo.build_predictor(demo.parse_args(["--input", "x.jpg", "--output", "out",
                                          "--acceleration", "int8"]))
    demo.build_predictor(demo.parse_args(["--input", "x.jpg", "--output", "out"]))
    assert [k["acceleration"] for k in calls] == ["int8", "fp32"]
    args = get_parser().parse_args(["--ref-coco", "a.json", "--images", "x", "--output", "o.json",
                                    "--acceleration", "auto"])
    assert args.acceleration == "auto"
    with pytest.raises(SystemExit):
        get_parser().parse_args(["--ref-coco", "a.json", "--images", "x", "--output", "o",
                                 "--acceleration", "fp16"])
