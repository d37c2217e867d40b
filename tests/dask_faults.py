"""Fault injection for the Dask tests: run the work in a thread and SIGKILL the process of
a worker while it runs one of the work's tasks (the nanny restarts the worker)."""
from __future__ import annotations

import os
import signal
import threading
import time


def run_killing_a_busy_worker(client, work, *, wait_s: float, join_s: float, settle_s: float = 0.0,
                              poll_s: float = 0.05):
    """``work()`` in a thread; the first worker seen with a task within ``wait_s`` is
    killed (``settle_s`` after it was seen). Returns (work's result, the exception it
    raised or None, the killed worker's address or None)."""
    out: dict = {}

    def go():
        try:
            out["result"] = work()
        except BaseException as exc:  # handed to the caller, which asserts on it
            out["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    killed = None
    deadline = time.time() + wait_s
    while time.time() < deadline and killed is None and t.is_alive():
        busy = [w for w, tasks in client.processing().items() if tasks]
        if busy:
            if settle_s:
                time.sleep(settle_s)
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed = busy[0]
        time.sleep(poll_s)
    t.join(timeout=join_s)
    return out.get("result"), out.get("error"), killed
