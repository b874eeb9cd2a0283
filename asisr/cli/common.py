"""What every asisr command shares: one-line errors, exit codes, the typer app factory."""

from __future__ import annotations

import sys
import warnings

import typer

from asisr.errors import UserError

try:  # typer >= 0.2x vendors click; older typer uses click itself
    from typer._click import exceptions as _click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as _click_exceptions

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a process killed by Ctrl-C


class Interrupted(Exception):
    """Ctrl-C, caught by a command that says what it had finished: ``run_app`` prints that one line, exit 130."""


_UsageError = _click_exceptions.UsageError
_NoArgsIsHelpError = getattr(_click_exceptions, "NoArgsIsHelpError", ())


def make_app(help_text: str | None = None) -> typer.Typer:
    return typer.Typer(add_completion=False, help=help_text, pretty_exceptions_enable=False, rich_markup_mode=None,
                       context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})


def run_app(app: typer.Typer, prog_name: str, argv: list[str] | None = None) -> int:
    """Run ``app``; usage errors and ``UserError`` become one ``error:`` line and exit status 2."""
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
        if rc == EXIT_INTERRUPTED:  # typer turns a KeyboardInterrupt inside a command into a silent exit 130
            typer.echo("interrupted", err=True)
    except Interrupted as e:
        typer.echo(" ".join(str(e).split()), err=True)
        rc = EXIT_INTERRUPTED
    except typer.Exit as e:
        rc = e.exit_code
    except _NoArgsIsHelpError as e:
        typer.echo(e.format_message(), err=True)
        rc = EXIT_USER_ERROR
    except _UsageError as e:
        hint = "" if "--help" in e.format_message() else f" (see {prog_name} --help)"
        typer.echo("error: " + " ".join(e.format_message().split()) + hint, err=True)
        rc = EXIT_USER_ERROR
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        rc = EXIT_INTERRUPTED
    except UserError as e:
        typer.echo("error: " + " ".join(str(e).split()), err=True)
        rc = EXIT_USER_ERROR
    rc = rc if isinstance(rc, int) else 0
    if argv is None:
        sys.exit(rc)
    return rc
