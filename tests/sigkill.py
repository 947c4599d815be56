"""``python -m tests.sigkill CALLS MODULE.FUNCTION STAGE [ARGS...]``: run ``python -m STAGE ARGS``
and kill this very process with SIGKILL as soon as ``MODULE.FUNCTION`` has returned ``CALLS``
times — a real ``kill -9`` at a chosen point of a run (no exception, no ``finally``, no flush),
deterministic where a kill from outside would land wherever the run happens to be."""

from __future__ import annotations

import importlib
import os
import runpy
import signal
import sys


def main() -> None:
    calls, target, stage, *args = sys.argv[1:]
    module_name, name = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real = getattr(module, name)
    count = 0

    def counted(*a, **kw):
        nonlocal count
        out = real(*a, **kw)
        count += 1
        if count == int(calls):
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(module, name, counted)
    sys.argv = [stage, *args]
    runpy.run_module(stage, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
