"""Runs documentation snippets each in a fresh child of one interpreter that has imported
torch once (tests/test_docs.py starts it; not a test module).

Each snippet must run as a reader would paste it into a new interpreter: its own imports,
a fresh ``__main__`` namespace, the user's folder as the working directory. A new
interpreter per snippet gives that, but spends 3-4 s importing torch before the first line
runs (11 snippets: most of a minute of the fast suite on 2 cores). Here one process
imports torch, torchvision and archspec once and does no other work (no thread pools
started), then forks a child per snippet: the child starts from that pristine state,
execs the snippet in an empty namespace (a missing import is still a NameError) and exits
with the snippet's status. Snippets that must not see torch already imported, or that
start processes of their own, keep the plain fresh interpreter (test_docs decides).

Protocol: one JSON request per line on stdin ``{"code", "where", "cwd", "log"}``; one
JSON reply per line on stdout ``{"rc": exit status}``; the snippet's output goes to the
file ``log``.
"""

import json
import os
import sys
import traceback
import warnings

import torch  # noqa: F401  (the point: imported once, before any fork)
import torchvision  # noqa: F401

import archspec  # noqa: F401


def _child(request: dict) -> int:
    os.chdir(request["cwd"])
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # stdin is the request pipe: not the snippet's
    try:
        exec(compile(request["code"], request["where"], "exec"), {"__name__": "__main__"})
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def main() -> None:
    # torch's import leaves one idle native thread; Python 3.12+ warns about any fork of a
    # multi-threaded process. The fork happens before this process runs any torch work.
    warnings.filterwarnings("ignore", message=".*fork", category=DeprecationWarning)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
