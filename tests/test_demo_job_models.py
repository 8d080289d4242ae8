"""tools/demo_job.py --models: which configs a side-by-side run trains, and clear usage errors."""
import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo_job():
    spec = importlib.util.spec_from_file_location("demo_job", os.path.join(ROOT, "tools",
                                                                           "demo_job.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parse(demo_job, monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["demo_job.py", *argv])
    return demo_job.parse_args()


def test_models_select_each_models_demo_config_in_order(demo_job, monkeypatch):
    args = _parse(demo_job, monkeypatch, "--models", "sine,segic", "SOLVER.MAX_ITER", "5")
    assert list(args.config_files) == ["sine", "segic"]
    for path in args.config_files.values():
        assert os.path.isfile(path)
    from sine.config import get_sine_cfg

    archs = [get_sine_cfg(p).MODEL.META_ARCHITECTURE for p in args.config_files.values()]
    assert archs == ["SINE", "SegIC"]
    assert args.opts == ["SOLVER.MAX_ITER", "5"]  # overrides reach every model


def test_default_is_the_sine_demo(demo_job, monkeypatch):
    args = _parse(demo_job, monkeypatch)
    assert list(args.config_files.values()) == [
        os.path.join(ROOT, "configs", "demo", "sine_synthetic_tiny.yaml")]


@pytest.mark.parametrize("argv, message", [
    (["--models", "sine,matcher"], "matcher"),
    (["--models", "segic", "--config-file", "x.yaml"], "either --config-file or --models"),
])
def test_bad_model_lists_are_named(demo_job, monkeypatch, capsys, argv, message):
    with pytest.raises(SystemExit):
        _parse(demo_job, monkeypatch, *argv)
    assert message in capsys.readouterr().err
