"""``python -m tests.sigkill [SIGNAL] CALLS MODULE.FUNCTION STAGE [ARGS...]``: run ``python -m
STAGE ARGS`` and send this very process ``SIGNAL`` (default ``SIGKILL``) as soon as
``MODULE.FUNCTION`` has returned ``CALLS`` times — a real ``kill -9`` (no exception, no
``finally``, no flush), or the ``SIGTERM`` a scheduler sends, at a chosen point of a run:
deterministic where a signal from outside would land wherever the run happens to be."""

from __future__ import annotations

import importlib
import os
import runpy
import signal
import sys


def main() -> None:
    args = sys.argv[1:]
    signum = signal.Signals[args.pop(0)] if args[0].startswith("SIG") else signal.SIGKILL
    calls, target, stage, *args = args
    module_name, name = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real = getattr(module, name)
    count = 0

    def counted(*a, **kw):
        nonlocal count
        out = real(*a, **kw)
        count += 1
        if count == int(calls):
            os.kill(os.getpid(), signum)
        return out

    setattr(module, name, counted)
    sys.argv = [stage, *args]
    runpy.run_module(stage, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
