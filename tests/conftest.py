import logging
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Golden parity tolerances assume float32 on a fixed, small number of threads.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def golden_dir():
    """The golden directory: $SINE_GOLDEN_DIR, else ../shared/golden/sine_small."""
    path = os.environ.get(
        "SINE_GOLDEN_DIR", os.path.join(ROOT, "..", "shared", "golden", "sine_small")
    )
    if not os.path.isfile(os.path.join(path, "config.json")):
        pytest.fail(f"golden directory not found: {path} (set SINE_GOLDEN_DIR)")
    return os.path.abspath(path)


@pytest.fixture(autouse=True)
def _restore_project_loggers():
    """CLIs run in-process call detectron2's setup_logger, which binds handlers to pytest's
    per-test output streams and turns propagation off; undo that after each test so later
    tests' ``caplog`` sees the messages and no handler writes to a closed stream."""
    yield
    for name in ("sine", "detectron2", "fvcore", "d2"):
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            log.removeHandler(handler)
        log.propagate = True


@pytest.fixture
def cuda_placements(monkeypatch):
    """A machine that reports a GPU: ``Module.to(cuda)`` is recorded as (module class, device)
    and skipped, so CUDA-only branches run on the CPU. Returns the list of placements."""
    import torch

    placed = []
    module_to = torch.nn.Module.to

    def to(module, *args, **kwargs):
        device = kwargs.get("device", args[0] if args else None)
        if isinstance(device, (str, torch.device)) and torch.device(device).type == "cuda":
            placed.append((type(module).__name__, str(device)))
            return module
        return module_to(module, *args, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.nn.Module, "to", to)
    return placed
