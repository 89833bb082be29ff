"""A fault hook for the end-to-end tests, off unless its variable is set: a chunk step with less memory than
`CNG_TEST_OOM_BELOW_GIB` kills its own process with SIGKILL, as the kernel's OOM killer kills a pod's process
(exit 137), so the failure sensor's retry at more memory is tested on a real daemon."""

from __future__ import annotations

import os
import signal


def out_of_memory(memory_gib: int) -> None:
    below = os.environ.get("CNG_TEST_OOM_BELOW_GIB")
    if below and memory_gib < int(below):
        os.kill(os.getpid(), signal.SIGKILL)
