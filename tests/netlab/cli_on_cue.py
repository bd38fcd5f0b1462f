"""``p2pstack ARGS...`` (``stack.cli.main``), run when a line arrives on stdin.

The real-NAT matrix (``netmatrix.py``) starts its 25 ``p2pstack connect`` processes
during the idle period and releases them together: importing the CLI costs ~0.5 s of CPU
per process (1-2 s before a connect through the control socket stopped importing the
node), which 25 processes on a 2-core machine would otherwise spend while the connects
run. Prints ``ready`` on stdout once imported; after the cue, stdout and stderr
and the exit code are the CLI's own.
"""

from __future__ import annotations

import sys

from stack.cli import main

if __name__ == "__main__":
    print("ready", flush=True)
    if sys.stdin.readline():
        sys.exit(main(sys.argv[1:]))
    sys.exit(130)  # stdin closed without a cue: the run was abandoned
