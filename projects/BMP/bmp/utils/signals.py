"""Signal names from a config, and processes that ignore them (see bmp/engine/preemption.py)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable, Sequence

__all__ = ["resolve_signals", "ignore_signals"]


def resolve_signals(names: Iterable[str]) -> list[signal.Signals]:
    """``["SIGTERM", "SIGUSR1"]`` -> signals; an unknown name is one error line."""
    out = []
    for name in names:
        sig = getattr(signal.Signals, str(name).upper(), None)
        if sig is None or sig in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(
                f"SOLVER.PREEMPTION.SIGNALS: {name!r} is not a signal that can be caught; use "
                "names such as SIGTERM, SIGUSR1, SIGUSR2 or SIGINT ([] turns preemption off)"
            )
        out.append(sig)
    return out


def ignore_signals(signals: Sequence[int]) -> Callable[..., None]:
    """A ``worker_init_fn`` (or a plain call) that makes this process ignore ``signals``."""
    signals = list(signals)

    def ignore(*_: object) -> None:
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)

    return ignore
