"""Items per second of an evaluation run (episodes, frames, images), printed at its end."""
import time
from contextlib import contextmanager

__all__ = ["Throughput"]


class Throughput:
    """Counts the items a run processes and the wall time spent processing them.

    Only the time inside :meth:`measure` counts (data loading and inference, not building the
    model), and only the items of this run (a resumed run does not count finished ones).
    """

    def __init__(self, unit: str, count: int = 0, seconds: float = 0.0):
        self.unit = unit
        self.count = int(count)
        self.seconds = float(seconds)

    @contextmanager
    def measure(self):
        start = time.perf_counter()
        try:
            yield self
        finally:
            self.seconds += time.perf_counter() - start

    def add(self, n: int = 1) -> None:
        self.count += int(n)

    @property
    def rate(self):
        """Items per second, or None when nothing was timed."""
        return self.count / self.seconds if self.count and self.seconds > 0 else None

    def as_dict(self):
        return {self.unit: self.count, "seconds": self.seconds, f"{self.unit}_per_s": self.rate}

    def __str__(self) -> str:
        if self.rate is None:
            return f"throughput: no {self.unit} processed in this run"
        return (f"throughput: {self.rate:.2f} {self.unit}/s ({self.count} {self.unit} in "
                f"{self.seconds:.1f} s)")
