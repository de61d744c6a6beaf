"""The ``onedge`` command line. Every command is a thin call of a plain function.

The commands live by what they do: :mod:`pipeline.cli.chain_commands` (train, export, validate,
int8-debug, run), :mod:`pipeline.cli.registry_commands` (promote, rollback) and
:mod:`pipeline.cli.data_commands` (datasets, models, methods, data check, predict), with the
options they share in :mod:`pipeline.cli.options`. Each command imports torch, Prefect or MLflow
inside its body, so ``onedge --help`` imports none of them.
"""

from __future__ import annotations

import sys

import click
import typer
from rich.console import Console
from rich.markup import escape

from onedge.errors import ConfigError, OnedgeError
from pipeline.cli import chain_commands, data_commands, registry_commands

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts hold literal brackets: ssh://user@host:port[/jetson]
    help="onedge: ONE online distillation to validated students on edge boards.",
)
# registered in the order ``onedge --help`` lists them
app.command()(chain_commands.train)
app.command()(data_commands.datasets)
app.command()(data_commands.models)
app.command()(data_commands.methods)
app.add_typer(data_commands.data_app, name="data")
app.command()(chain_commands.export)
app.command()(chain_commands.validate)
app.command("int8-debug")(chain_commands.int8_debug)
app.command()(chain_commands.run)
app.command()(registry_commands.promote)
app.command()(registry_commands.rollback)
app.command()(data_commands.predict)


SET_FLAGS = ("--set", "-s")


def expand_set_pairs(argv: list[str]) -> list[str]:
    """``--set a=1 b=2`` -> ``--set a=1 --set b=2``: a flag takes every key=value after it.

    A bare word after a run of pairs is refused with one line (no command takes positional
    arguments), so a forgotten ``=`` is not silently dropped.
    """
    out: list[str] = []
    expecting, in_run = False, False
    for token in argv:
        if expecting:  # the flag's own value, given to Click unchanged
            out.append(token)
            expecting, in_run = False, True
        elif token in SET_FLAGS:
            out.append(token)
            expecting = True
        elif token.startswith("--set="):
            out.append(token)
            in_run = True
        elif in_run and not token.startswith("-"):
            if "=" not in token:
                raise ConfigError(
                    f"--set takes key=value pairs; {token!r} is not one "
                    "(e.g. --set train.epochs=5 train.lr=0.05)"
                )
            out += ["--set", token]
        else:
            out.append(token)
            in_run = False
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: errors onedge raises on purpose print one line and exit non-zero."""
    try:
        args = expand_set_pairs(list(sys.argv[1:] if argv is None else argv))
        status = app(args=args, standalone_mode=False)  # an Exit(n) comes back as n
    except OnedgeError as exc:
        message = f"[bold red]error:[/] {escape(str(exc))}"  # messages may hold [brackets]
        Console(stderr=True).print(message, highlight=False, soft_wrap=True)
        return 2
    except click.exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return status if isinstance(status, int) else 0


def entry() -> None:
    sys.exit(main())
