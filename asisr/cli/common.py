"""What every asisr command shares: one-line errors, exit codes, option parsing."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from asisr.errors import UserError

EXIT_USER_ERROR = 2


def run_app(app: typer.Typer) -> None:
    """Run a typer app, turning ``UserError`` into ``error: ...`` on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code or 0)
    except Exception as e:  # click usage errors and the like
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        raise


def make_app(help_text: str) -> typer.Typer:
    return typer.Typer(add_completion=False, help=help_text, pretty_exceptions_enable=False,
                       context_settings={"help_option_names": ["-h", "--help"]})


def single_command(app: typer.Typer) -> Callable[[], None]:
    return lambda: run_app(app)
