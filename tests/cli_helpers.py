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
    """Exit 2, exactly one line on stderr naming the problem, no traceback."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0], err
    assert "Traceback" not in err
