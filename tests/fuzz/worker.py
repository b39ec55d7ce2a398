"""A worker process that runs cases, and the parent's handle on it (with a time limit per case).

Numba reads `NUMBA_ENABLE_CUDASIM` when it is first imported, so the CUDA simulator runs in
a process of its own. (`NUMBA_DISABLE_JIT` is no faster way in: the kernels call Numba
intrinsics that do not run as plain Python.) The protocol is one JSON line per case on
stdin and one `@@`-prefixed JSON line per outcome on stdout (anything else printed is ignored).
A case that runs past its time limit kills the worker (class `timeout`); the next case starts
a fresh one, as does every `recycle`-th case (compiled kernels accumulate in memory).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MODES = {"jit": {}, "cudasim": {"NUMBA_ENABLE_CUDASIM": "1"}}
_TAG = "@@"


class Worker:
    """Runs cases in a child process: compiled CPU kernels ('jit') or the simulator ('cudasim')."""

    def __init__(self, mode: str = "jit", cache_dir: str | None = None, recycle: int = 40):
        self.mode, self.cache_dir, self.recycle = mode, cache_dir, recycle
        self.proc: subprocess.Popen[str] | None = None
        self.runs = 0

    def _start(self) -> subprocess.Popen[str]:
        env = dict(os.environ, **MODES[self.mode])
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        if self.cache_dir:
            env["LOSSDSL_CACHE_DIR"] = self.cache_dir
        return subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def run(self, case: dict[str, Any], checks: tuple[str, ...], limit_s: float) -> tuple[str, str]:
        """The outcome of one case, or ('timeout', ...) / ('worker-died', ...)."""
        if self.proc is None or self.runs >= self.recycle:
            self.close()
            self.proc = self._start()
            self.runs = 0
        self.runs += 1
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"case": case, "checks": list(checks)}) + "\n")
        self.proc.stdin.flush()
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + limit_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(timeout=left):
                self.close()
                return "timeout", f"no result within {limit_s:g} s"
            line = self.proc.stdout.readline()
            if not line:
                code = self.proc.wait()
                self.proc = None
                return "worker-died", f"worker exited with code {code}"
            if line.startswith(_TAG):
                cls, detail = json.loads(line[len(_TAG) :])
                return str(cls), str(detail)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def main() -> None:
    """The child: read cases, print outcomes."""
    from tests.fuzz.compare import run_case

    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints cannot corrupt the protocol
    for line in sys.stdin:
        job = json.loads(line)
        outcome = run_case(job["case"], tuple(job["checks"]))
        out.write(_TAG + json.dumps(list(outcome)) + "\n")
        out.flush()


def _exit_with_parent(parent: int) -> None:
    """A killed campaign leaves no worker behind, even one busy compiling."""
    while os.getppid() == parent:
        time.sleep(2.0)
    os._exit(1)


if __name__ == "__main__":
    main()
