"""How `cng-assets run` stops on Ctrl-C (SIGINT) or SIGTERM, and why nothing of it outlives a kill -9.

Dagster's `execute_in_process` swaps the SIGINT/SIGTERM handlers for its own while a step runs (one that raises
`DagsterExecutionInterruptedError` in the step, so the step unwinds) and swallows a signal that arrives outside
the step's code. The runner still has to know that one came, and which: so the signal numbers go to a pipe
(`signal.set_wakeup_fd`), which Python's C-level handler writes to whichever Python handler is installed."""

from __future__ import annotations

import ctypes
import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The run stopped on a signal: `stopped` (a step, or None between steps) and nothing after it ran."""

    def __init__(self, signum: int, done: int, stopped: object | None):
        self.signum, self.done, self.stopped = signum, done, stopped
        super().__init__(self.message)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM

    @property
    def message(self) -> str:
        where = f"{self.stopped} stopped, nothing after it ran" if self.stopped else "nothing after them ran"
        return (f"interrupted ({signal.Signals(self.signum).name}): {self.done} steps done, {where}; "
                "rerun the same command to continue")


class SignalWatch:
    """While entered, SIGINT and SIGTERM no longer raise in the runner's own code; `received()` says which came
    first, also while Dagster's handlers were installed. Outside the main thread signals cannot be watched:
    `received()` is then always None."""

    def __init__(self):
        self._first: int | None = None
        self._pipe: tuple[int, int] | None = None

    def __enter__(self) -> SignalWatch:
        if threading.current_thread() is not threading.main_thread():
            return self
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._pipe = r, w
        self._old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        # A handler that does nothing: the wakeup pipe records the signal, the runner checks it between steps.
        self._old = {s: signal.signal(s, lambda *_: None) for s in SIGNALS}
        return self

    def received(self) -> int | None:
        while self._pipe and self._first is None:
            try:
                data = os.read(self._pipe[0], 512)
            except BlockingIOError:
                break
            self._first = next((b for b in data if b in SIGNALS), None)
        return self._first

    def __exit__(self, *exc) -> None:
        if self._pipe:
            signal.set_wakeup_fd(self._old_fd)
            for s, handler in self._old.items():
                signal.signal(s, handler)
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None


def _pdeathsig_preexec():
    """A `preexec_fn` that makes a child die with SIGKILL when this thread exits, even on kill -9 of this process
    (Linux only: elsewhere None). PR_SET_PDEATHSIG fires when the thread that forked exits: start children from a
    thread that lives as long as they should (the in-process executor runs steps on the main thread)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the forked child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above: nobody will send the signal
            os._exit(1)

    return preexec


def child_dies_with_us() -> dict:
    """`subprocess.Popen` arguments for a child process that must not outlive this one."""
    preexec = _pdeathsig_preexec()
    return {"preexec_fn": preexec} if preexec else {}
