"""Run a console-script ``main`` in-process, as a user's shell would, and capture what it printed."""

from __future__ import annotations

import sys


def invoke(main, args: list[str], capsys) -> tuple[int, str, str]:
    old = sys.argv
    sys.argv = ["asisr", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, fragment: str) -> None:
    """Exit 2, exactly one error line on stderr naming the problem, no traceback.

    Status lines of slow first steps (``exporting ... once (cached in ...) ...``, ``loading ... on
    PyTorch ...``) may come before it, depending on whether the cache is warm; nothing else may.
    """
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and fragment in lines[-1], err
    assert all(line.endswith(" ...") and not line.startswith("error") for line in lines[:-1]), err
    assert "Traceback" not in err
