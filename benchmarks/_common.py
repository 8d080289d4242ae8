"""Shared helpers of the benchmark scripts: machine description, timing, peak memory, tables.

Peak memory on CPU is the resident-set high-water mark (``VmHWM`` of ``/proc/self/status``,
the same number as ``resource.getrusage(...).ru_maxrss``) of a fresh child process that runs
one configuration, so every number includes Python + torch + the model; the scripts also report
the part added by the measured work (peak minus the resident set just before it). On CUDA it is
``torch.cuda.max_memory_allocated``.
"""
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

MIB = 1024 * 1024


def cpu_model() -> str:
    from sine.engine.acceleration import cpu_model_name

    return cpu_model_name()


def machine_info(device: str = "cpu") -> Dict[str, str]:
    """What the numbers were measured on (printed by every script)."""
    info = {
        "cpu": cpu_model(),
        "logical cores": str(os.cpu_count()),
        "usable cores": str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity")
        else "?",
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
        "cpu flags (speed-relevant)": _speed_flags(),
        "memory": _total_memory(),
        "load average (1/5/15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "os": platform.platform(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _speed_flags() -> str:
    """The cpuinfo flags that decide which CPU speed option wins (AMX, bf16, VNNI, ...)."""
    from sine.engine.acceleration import RELEVANT_CPU_FLAGS, cpu_flags

    present = [f for f in RELEVANT_CPU_FLAGS if f in cpu_flags()]
    return " ".join(present) or "none of " + " ".join(RELEVANT_CPU_FLAGS)


def _total_memory() -> str:
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        return f"{kb / MIB:.1f} GiB"
    except (OSError, ValueError, IndexError):
        return "?"


def print_machine(device: str = "cpu") -> Dict[str, str]:
    info = machine_info(device)
    print("## Machine")
    for k, v in info.items():
        print(f"- {k}: {v}")
    print()
    return info


def print_load_average() -> None:
    """The machine may be shared: show how busy it was by the end of the run."""
    print("\nload average at the end (1/5/15 min): "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def rss_mib() -> float:
    """Current resident set size of this process (MiB)."""
    return _proc_status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    """Resident-set high-water mark of this process (MiB)."""
    try:
        return _proc_status_kib("VmHWM") / 1024
    except KeyError:  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def timed(fn, sync_cuda: bool = False) -> float:
    """Seconds one call of ``fn`` takes."""
    if sync_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if sync_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved_timings(fns: Dict[str, callable], repeats: int, warmup: int,
                        sync_cuda: bool = False) -> Dict[str, List[float]]:
    """Run every function once per round, alternating the order each round.

    The machine may be shared: neighbouring calls of two paths see the same load, so compare
    them by the per-round ratio (see :func:`paired_ratio`), not by times taken minutes apart.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(timed(fns[name], sync_cuda))
    return times


def paired_ratio(slow: Sequence[float], fast: Sequence[float]) -> float:
    """Median over rounds of slow / fast (each round ran both back to back)."""
    return statistics.median(s / f for s, f in zip(slow, fast))


def run_child(script: str, args: Sequence[str], timeout: float = 3600) -> Dict:
    """Run ``script --child ...`` in a fresh interpreter; it prints one JSON line last."""
    cmd = [sys.executable, script, "--child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    fmt = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    lines = [fmt(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def sine_cfg(opts: Sequence[str], device: str = "cpu"):
    """SINE defaults (released model sizes) with ``opts`` overrides, random weights."""
    from detectron2.config import get_cfg

    import sine  # noqa: F401  (registers the model)
    from sine.config import add_sine_config

    cfg = get_cfg()
    add_sine_config(cfg)
    cfg.merge_from_list(["MODEL.DEVICE", device, "MODEL.DINOV2.WEIGHTS", "", *opts])
    return cfg


def build_sine(opts: Sequence[str], device: str = "cpu", seed: int = 0):
    """(cfg, SINE in eval mode with random weights) from config overrides."""
    from detectron2.modeling import build_model

    cfg = sine_cfg(opts, device)
    torch.manual_seed(seed)
    return cfg, build_model(cfg).eval()
