"""Progress of long work: a bar on a terminal, else log lines with counts and rates."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """Progress on stderr: a line redrawn in place on a tty, else a log line every few seconds.

    ``add`` is cheap enough to call per request; ``tick`` prints if one is due
    (call it from a loop that runs even when nothing completes).
    """

    def __init__(self, label: str, *, total: int | None = None, every: float | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.errors = 0
        self._tty = sys.stderr.isatty()
        self._every = every if every is not None else (0.25 if self._tty else 5.0)
        self._t0 = time.perf_counter()
        self._next = self._t0 + self._every

    def add(self, n: int = 1, *, errors: int = 0) -> None:
        self.done += n
        self.errors += errors
        if time.perf_counter() >= self._next:
            self.tick()

    def tick(self) -> None:
        now = time.perf_counter()
        if now >= self._next:
            self._next = now + self._every
            self._print(now, final=False)

    def finish(self) -> None:
        self._print(time.perf_counter(), final=True)

    def _print(self, now: float, *, final: bool) -> None:
        elapsed = now - self._t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        done = f"{self.done:,}/{self.total:,}" if self.total else f"{self.done:,}"
        errors = f", {self.errors:,} errors" if self.errors else ""
        text = f"  {self.label}: {done} in {elapsed:.1f}s ({rate:,.0f}/s{errors})"
        if self._tty:
            bar = ""
            if self.total:
                filled = min(20, 20 * self.done // self.total)
                bar = "[" + "#" * filled + "." * (20 - filled) + "] "
            end = "\n" if final else ""
            sys.stderr.write(f"\r\x1b[K{bar}{text.strip()}{end}")
            sys.stderr.flush()
        else:
            print(text, file=sys.stderr, flush=True)
