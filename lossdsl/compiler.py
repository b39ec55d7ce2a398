"""The compile process behind `lossdsl.background`: `python -m lossdsl.compiler`.

Reads pickled jobs (cache directory, loss definition, specialisation, fixed parameters, entry
point, argument signature) from stdin, one after another; for each it generates the fused CPU
module into the cache if needed and has Numba compile the entry's phases for that signature
(Numba's `cache=True` stores the machine code beside the source), then writes one line to stdout:
"ok", or "error <message>". It exits when stdin closes or its parent process is gone.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from typing import Any

from lossdsl import runtime
from lossdsl.api import Loss


def main() -> None:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing printed while compiling can corrupt the replies
    while True:
        try:
            job = pickle.load(sys.stdin.buffer)
        except (EOFError, OSError):
            return
        try:
            _compile(*job)
            reply = "ok\n"
        except Exception as exc:
            reply = "error " + " ".join(str(exc).split()) + "\n"
        out.write(reply.encode())
        out.flush()


def _compile(
    cache_dir: str,
    definition: Any,
    specialize: bool,
    fixed: tuple[tuple[str, float], ...],
    entry: str,
    described: tuple[Any, ...],
) -> None:
    os.environ["LOSSDSL_CACHE_DIR"] = cache_dir
    module = Loss(definition, specialize=specialize, compile_mode="sync")._kernels(fixed)
    if not runtime.load_cached_entry(module, entry, described):
        runtime.compile_entry(module, entry, described)


def _exit_with_parent(parent: int) -> None:
    """No compile process outlives the program it compiles for by more than a second."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


if __name__ == "__main__":
    main()
