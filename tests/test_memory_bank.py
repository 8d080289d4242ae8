"""VOS memory bank policy (spec §7.3) on hand-worked sequences."""
import math

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg

from sine.config import add_sine_config
from sine.engine.memory_bank import (
    DECAY_TYPES,
    MemoryBank,
    ObjectMemory,
    decay_weight,
    merge_object_masks,
)


def frame_ids(memory):
    return [e.frame_id for e in memory.get_memory()]


def test_linear_decay_values():
    # max(0, 1 - d / 20) for d < 20, else 0.
    assert decay_weight(0) == 1.0
    assert decay_weight(5) == pytest.approx(0.75)
    assert decay_weight(19) == pytest.approx(0.05)
    assert decay_weight(20) == 0.0 and decay_weight(35) == 0.0
    with pytest.raises(ValueError, match="unknown decay type"):
        decay_weight(1, "quadratic")


@pytest.mark.parametrize("decay_type", DECAY_TYPES)
def test_every_decay_variant_starts_at_one_and_never_grows(decay_type):
    weights = [decay_weight(d, decay_type, 20.0) for d in range(60)]
    assert weights[0] == 1.0
    assert all(0.0 <= w <= 1.0 for w in weights)
    assert all(a >= b for a, b in zip(weights, weights[1:]))
    if decay_type in ("linear", "cos", "ellipse"):  # bounded window: nothing past the ratio
        assert weights[20] == 0.0 and weights[19] > 0.0
    elif decay_type == "exp":
        assert weights[20] == pytest.approx(math.exp(-1.0)) and weights[59] > 0.0
    else:
        assert set(weights) == {1.0}


def test_bank_takes_every_memory_option_from_the_config():
    from sine.config import get_sine_cfg

    cfg = get_sine_cfg(opts=["MODEL.SINE.VOS.MEMORY_LEN", "4", "MODEL.SINE.VOS.FIX_LAST_FRAME",
                             "True", "MODEL.SINE.VOS.DECAY_TYPE", "cos",
                             "MODEL.SINE.VOS.DECAY_RATIO", "10.0"])
    bank = MemoryBank(cfg)
    bank.add_object(1, 0, "gt")
    for t in range(1, 8):
        bank.push(1, t, f"p{t}", 0.5)
    memory = bank._objects[1]
    assert (memory.capacity, memory.decay_type, memory.decay_ratio) == (2, "cos", 10.0)
    assert memory.last.payload == "p7" and memory.first.payload == "gt"  # both pinned
    with pytest.raises(ValueError, match="unknown decay type"):
        MemoryBank(get_sine_cfg(opts=["MODEL.SINE.VOS.DECAY_TYPE", "quadratic"]))


def test_never_exceeds_capacity_and_first_frame_survives():
    memory = ObjectMemory(memory_len=6, fix_first_frame=True)
    memory.push(0, "gt", 1.0)
    rng = np.random.default_rng(0)
    for t in range(60):
        memory.push(t, f"pred{t}", float(rng.uniform()))
        assert len(memory.get_memory()) <= 6
        assert len(memory._ranked) <= 5  # memory_len - pinned first frame
    entries = memory.get_memory()
    assert len(entries) == 6
    assert entries[-1].payload == "gt" and entries[-1].frame_id == 0  # first frame, last in list


def test_linear_decay_evicts_old_frames_constant_does_not():
    def run(decay_type):
        memory = ObjectMemory(memory_len=3, decay_type=decay_type)  # 2 ranked slots
        memory.push(0, "gt")
        memory.push(0, "p0", 0.9)
        memory.push(30, "p30", 0.1)
        memory.push(31, "p31", 0.1)
        return frame_ids(memory)

    # Linear, at t=31: p0 decays to 0 (d = 31 >= 20), p30 -> 0.95 * 0.1, p31 -> 0.1: p0 goes.
    assert sorted(run("linear")[:-1]) == [30, 31]
    # Constant: p30 and p31 tie on (0.1, 0.1) and the older frame id loses; p0 (0.9) stays.
    assert sorted(run("constant")[:-1]) == [0, 31]


def test_score_beats_recency_within_the_decay_window():
    memory = ObjectMemory(memory_len=3)  # 2 ranked slots
    memory.push(0, "gt")
    memory.push(0, "p0", 0.9)
    memory.push(1, "p1", 0.5)
    memory.push(2, "p2", 0.5)
    # At t=2: p0 0.9 * 0.9 = 0.81, p1 0.95 * 0.5 = 0.475, p2 0.5 -> p1 is dropped.
    assert frame_ids(memory) == [2, 0, 0]  # ranked ascending (p2 0.5, p0 0.81), then first
    memory.push(3, "p3", 0.01)
    # The new frame itself is dropped when it ranks lowest (0.01 < 0.475, 0.765).
    assert frame_ids(memory) == [2, 0, 0]


def test_tie_breaking_decayed_then_score_then_frame_id():
    memory = ObjectMemory(memory_len=2, fix_first_frame=False, decay_type="linear")
    memory.push(0, "a", 0.3)
    memory.push(0, "b", 0.2)
    memory.push(40, "c", 0.0)
    # At t=40: a -> (0, 0.3, 0), b -> (0, 0.2, 0), c -> (0, 0.0, 40): c has the smallest
    # raw score and goes although it is the newest.
    assert [e.payload for e in memory.get_memory()] == ["b", "a"]
    memory = ObjectMemory(memory_len=2, fix_first_frame=False, decay_type="constant")
    for t in (1, 2, 3):
        memory.push(t, t, 0.5)
    assert frame_ids(memory) == [2, 3]  # full tie: the oldest frame is dropped


def test_fix_last_frame_pins_the_newest():
    memory = ObjectMemory(memory_len=3, fix_first_frame=True, fix_last_frame=True)  # 1 slot
    memory.push(0, "gt")
    memory.push(1, "p1", 0.1)
    memory.push(2, "p2", 0.9)
    memory.push(3, "p3", 0.2)
    # p3 is pinned as last; p1 (0.9 * 0.1) and p2 (0.95 * 0.9) compete for the slot at t=3.
    assert frame_ids(memory) == [2, 3, 0]
    with pytest.raises(ValueError, match="increase memory_len"):
        ObjectMemory(memory_len=1, fix_first_frame=True, fix_last_frame=True)


def test_frames_must_be_pushed_in_order():
    memory = ObjectMemory()
    memory.push(5, "gt")
    with pytest.raises(ValueError, match="push frames in order"):
        memory.push(4, "late", 0.5)


def test_bank_objects_added_later():
    cfg = get_cfg()
    add_sine_config(cfg)
    bank = MemoryBank(cfg)
    bank.add_object(1, 0, "gt1")
    for t in range(1, 5):
        bank.push(1, t, f"o1-{t}", 0.8)
    bank.add_object(2, 3, "gt2")
    bank.push(2, 4, "o2-4", 0.7)
    assert bank.object_ids == [1, 2]
    assert frame_ids(bank._objects[1]) == [1, 2, 3, 4, 0]  # equal scores: older decays more
    assert [e.payload for e in bank.get_memory(2)] == ["o2-4", "gt2"]
    with pytest.raises(KeyError, match="add_object"):
        bank.push(3, 4, "x", 0.5)
    with pytest.raises(KeyError, match="already has a memory"):
        bank.add_object(2, 4, "again")


def test_merge_overlap_highest_id_wins():
    a = np.zeros((3, 3), bool)
    a[:2, :2] = True
    b = np.zeros((3, 3), bool)
    b[1:, 1:] = True
    labels = merge_object_masks({5: b, 2: torch.from_numpy(a)})
    expected = np.array([[2, 2, 0], [2, 5, 5], [0, 5, 5]])  # (1,1) overlaps: 5 > 2
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.uint8
    assert merge_object_masks({}, image_size=(2, 4)).shape == (2, 4)
    with pytest.raises(ValueError, match=">= 1"):
        merge_object_masks({0: a})
