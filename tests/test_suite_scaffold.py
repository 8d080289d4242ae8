"""The evaluation scaffold shared by the FSS, FSOD and VOS suites: entry points that work from any
directory, the one resume mechanism, config resolution, and FSSEvaluator's episode state."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sine.evaluation.fss_evaluation import FSSEvaluator, accumulate_fss, fss_scores
from sine.evaluation.resume import RunRecords
from sine.evaluation.suite_setup import REPO_ROOT, resolve_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITES = [("inference_fss.eval", "inference_fss/eval.py"),
          ("inference_fsod.eval", "inference_fsod/eval.py"),
          ("inference_vos.run_vos", "inference_vos/run_vos.py")]


# One interpreter per mode, running the three entry points as ``python -m MODULE`` and as
# ``python path/to/SCRIPT.py`` do (runpy; a script's folder is sys.path[0]): imports cost seconds.
_RUN_AS = {
    "module": "runpy.run_module(entry, run_name='__main__', alter_sys=True)",
    "script": "sys.path[0] = os.path.dirname(entry); runpy.run_path(entry, run_name='__main__')",
}
_DRIVER = """
import os, runpy, sys
for entry in sys.argv[1:]:
    sys.argv = [entry, '--help']
    try:
        {run}
    except SystemExit as e:
        assert e.code in (0, None), (entry, e.code)
    else:
        raise AssertionError(entry + ' --help did not exit')
"""


@pytest.mark.parametrize("mode", sorted(_RUN_AS))
def test_suites_run_as_modules_and_as_scripts_from_any_directory(mode, tmp_path):
    entries = [m if mode == "module" else os.path.join(ROOT, s) for m, s in SUITES]
    env = dict(os.environ, PYTHONPATH=ROOT)  # as an installed (pip install -e .) checkout
    proc = subprocess.run([sys.executable, "-c", _DRIVER.format(run=_RUN_AS[mode]), *entries],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("--config-file") >= 3  # the three usages were printed


def test_documented_config_paths_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert REPO_ROOT == ROOT
    assert resolve_config_file("configs/fss/coco20i_1shot.yaml") == \
        os.path.join(ROOT, "configs/fss/coco20i_1shot.yaml")
    (tmp_path / "mine.yaml").write_text("_BASE_: x\n")
    assert resolve_config_file("mine.yaml") == "mine.yaml"  # the working directory first
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        resolve_config_file("configs/nope.yaml")


def test_run_records_reuse_only_results_of_the_same_settings(tmp_path):
    path = str(tmp_path / "unit" / "record.json")
    records = RunRecords({"weights": "a.pth", "seed": 1})
    assert records.load(path) is None  # not run yet
    records.save(path, {"results": {"AP": 1.5}})
    assert os.listdir(tmp_path / "unit") == ["record.json"]  # no temporary file left
    assert records.load(path)["results"] == {"AP": 1.5}
    other = {"weights": "b.pth", "seed": 1}
    with pytest.raises(ValueError, match=r"other settings \(weights: 'a.pth' -> 'b.pth'\)"):
        RunRecords(other).load(path)
    assert RunRecords(other, on_mismatch="redo").load(path) is None
    with pytest.raises(ValueError, match="reserved"):
        records.save(path, {"settings": 1})


def _episode(episode_id, class_id, seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 2, (6, 7))
    gt[0, 0] = 255
    return ({"episode_id": episode_id, "class_id": class_id, "sem_seg_gt": torch.from_numpy(gt)},
            {"sem_seg": torch.from_numpy(rng.random((1, 6, 7)).astype(np.float32))})


def test_fss_evaluator_keeps_episode_state_for_resuming():
    episodes = [_episode(e, c, e) for e, c in [(0, 3), (1, 5), (2, 3), (3, 5)]]
    full = FSSEvaluator(class_ids=[3, 5], threshold=0.5, distributed=False)
    for inp, out in episodes:
        full.process([inp], [out])
    expected = fss_scores(accumulate_fss(
        [o["sem_seg"][0] > 0.5 for _, o in episodes], [i["sem_seg_gt"] for i, _ in episodes],
        [i["class_id"] for i, _ in episodes]), [3, 5])
    assert full.evaluate()["fss"] == expected

    first = FSSEvaluator(class_ids=[3, 5], threshold=0.5, distributed=False)
    first.process(*map(list, zip(*episodes[:2])))
    saved = json.loads(json.dumps(first.state()))  # as written to episodes.json
    resumed = FSSEvaluator(class_ids=[3, 5], threshold=0.5, distributed=False)
    resumed.load_state(saved)
    assert resumed.num_episodes == 2 and resumed.has_episode(1) and not resumed.has_episode(2)
    resumed.process(*map(list, zip(*episodes[2:])))
    assert resumed.evaluate() == full.evaluate()
    with pytest.raises(ValueError, match="episode 3 was already evaluated"):
        resumed.process([episodes[3][0]], [episodes[3][1]])
