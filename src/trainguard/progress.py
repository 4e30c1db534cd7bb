"""One progress meter for long work: a bar on a terminal, plain periodic lines on a pipe.

CI logs are pipes: a spinner there prints nothing for minutes and a bar prints
escape codes, so off a terminal the meter writes a line such as
``embedding (minilm): 1,024/4,624 (22%), 41 s elapsed, ETA 2m 24s`` every
`interval` seconds (env ``TRAINGUARD_PROGRESS_INTERVAL``, default 15) and a
closing line if it wrote any. ``TRAINGUARD_PROGRESS=off`` silences it; ``on``
forces it for short work too. Output goes to stderr so stdout stays clean JSON.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    return f"{m}m {s:02d}s" if m < 60 else f"{m // 60}h {m % 60:02d}m"


class Meter:
    """Counts done of `total` under a description; use as a context manager."""

    def __init__(self, description: str, total: int, *, stream: IO[str] | None = None,
                 interval: float | None = None, tty: bool | None = None) -> None:
        self.description, self.total, self.done = description, max(int(total), 0), 0
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval if interval is not None else float(os.environ.get("TRAINGUARD_PROGRESS_INTERVAL", 15))
        self.tty = self.stream.isatty() if tty is None else tty
        self._start = self._last = time.monotonic()
        self._lines = 0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> "Meter":
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), transient=True, console=Console(file=self.stream))
            self._task = self._bar.add_task(self.description, total=self.total)
            self._bar.start()
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.advance(self._task, n)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._write(self.line(now))

    def describe(self, description: str) -> None:
        self.description = description
        if self._bar is not None:
            self._bar.update(self._task, description=description)

    def line(self, now: float | None = None) -> str:
        elapsed = (now if now is not None else time.monotonic()) - self._start
        share = self.done / self.total if self.total else 1.0
        eta = f", ETA {_fmt_seconds(elapsed * (1 - share) / share)}" if 0 < share < 1 else ""
        return (f"{self.description}: {self.done:,}/{self.total:,} ({share:.0%}), "
                f"{_fmt_seconds(elapsed)} elapsed{eta}")

    def _write(self, text: str) -> None:
        self._lines += 1
        print(text, file=self.stream, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._lines:
            self._write(f"{self.description}: {self.done:,}/{self.total:,} done in "
                        f"{_fmt_seconds(time.monotonic() - self._start)}")


class _Silent:
    done = 0

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self, n: int = 1) -> None:
        return None

    def describe(self, description: str) -> None:
        return None


def meter(description: str, total: int, *, min_total: int = 0, enabled: bool | None = None) -> Meter | _Silent:
    """A `Meter`, or a silent stand-in when the work is short or progress is switched off.

    `enabled=None` decides from `min_total` and ``TRAINGUARD_PROGRESS`` (on/off/auto).
    """
    mode = os.environ.get("TRAINGUARD_PROGRESS", "auto").lower()
    if enabled is None:
        enabled = mode == "on" or (mode != "off" and total >= min_total)
    return Meter(description, total) if enabled else _Silent()
