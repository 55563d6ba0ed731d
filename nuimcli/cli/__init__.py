"""The ``nuim`` command: one Typer app; each subcommand lives in its own module of this package.

Modules here only parse arguments, call one library function and render its result (rich
tables, ``--json``); the work is done by the library (``nuimcli.engine``, ``nuimcli.zoo``,
``nuimcli.presets``). The command line a command was started with reaches it as
``ctx.obj["argv"]`` (see :func:`invocation`), never through a global.
:func:`main` turns a :class:`~nuimcli.errors.UserError` into a one-line message and exit code 2,
a :class:`~nuimcli.errors.RunFailed` into one line and exit code 1, and Ctrl-C into the one-line
``interrupted: kept …`` of :mod:`nuimcli.cli.interrupt` and exit code 130.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape
from typer.core import TyperGroup

from nuimcli.errors import Interrupted, PartialFailure, RunFailed, UserError
from nuimcli.utils.progress import err_console


class _NuimGroup(TyperGroup):
    """The root command group. Typer turns Ctrl-C inside a command into a silent exit 130; here it
    becomes the :class:`~nuimcli.errors.Interrupted` the command declared, which :func:`main` prints."""

    def invoke(self, ctx):  # noqa: D102
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            from nuimcli.cli import interrupt

            raise interrupt.interrupted(invocation(ctx)) from None


def invocation(ctx) -> list[str]:
    """The arguments of the running ``nuim`` command (after :func:`main`'s rewriting), from the
    click context; empty when the command was not started by :func:`main`."""
    return list((ctx.obj or {}).get("argv", [])) if ctx is not None else []


app = typer.Typer(
    name="nuim",
    cls=_NuimGroup,
    help="nuImages instance segmentation: convert, train, eval, predict and the model zoo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _print_version(value: bool) -> None:
    if value:
        from nuimcli import __version__

        print(f"nuim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print nuim's version and exit (a command's own --version, e.g. "
                                      "`nuim convert --version v1.0-mini`, is the dataset version)."),
) -> None:
    """nuImages instance segmentation: convert, train, eval, predict and the model zoo."""


#: Help of ``--trust-checkpoint`` (train, eval, predict): see nuimcli.checkpoints._torch_load.
EXACT_HELP = ("Run mmdet's bit-exact path (BatchNorm kept, NCHW). Default: BatchNorm folded into the convolutions "
              "and channels-last, within the parity fixtures' tolerances and faster.")
HALF_HELP = ("Reduced precision: float16 on CUDA, bfloat16 on CPU (about 2.7x faster on an AMX CPU, "
             "but detections move: see the README).")
TRUST_HELP = ("Read a checkpoint that pickles Python objects besides tensors (loading them can run code) although "
              "no preset names it (by SHA-256). Only for files whose origin you trust.")


# Options that, as in the reference tools (argparse nargs='+'), take several values after one
# flag: `--version v1.0-train v1.0-val`. Click needs the flag repeated; main() rewrites argv.
MULTI_VALUE_OPTIONS = {"--version"}


def expand_multi_value_options(argv: list[str], options: set[str] = MULTI_VALUE_OPTIONS) -> list[str]:
    """Rewrite ``--opt a b c`` into ``--opt a --opt b --opt c`` for the options in ``options``."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            out.extend(argv[i:])
            break
        if tok in options:
            i += 1
            values = []
            while i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            if not values:
                out.append(tok)  # let click report the missing value
            for v in values:
                out.extend([tok, v])
            continue
        out.append(tok)
        i += 1
    return out


# Options whose value may be left out: `nuim train P --resume` means `--resume latest`.
OPTIONAL_VALUE_OPTIONS = {"--resume": "latest"}


def fill_optional_values(argv: list[str], options: dict[str, str] = OPTIONAL_VALUE_OPTIONS) -> list[str]:
    """Insert the implied value after an option of ``options`` that is last or followed by another option."""
    out: list[str] = []
    for i, tok in enumerate(argv):
        if tok == "--":
            out.extend(argv[i:])
            break
        out.append(tok)
        if tok in options and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append(options[tok])
    return out


def _register_commands() -> None:
    # Each module adds its command(s) to `app` on import.
    from nuimcli.cli import presets_cmd  # noqa: F401
    from nuimcli.cli import train_cmd  # noqa: F401
    from nuimcli.cli import zoo_cmd  # noqa: F401
    from nuimcli.cli import convert_cmd  # noqa: F401
    from nuimcli.cli import demo_cmd  # noqa: F401
    from nuimcli.cli import eval_cmd, predict_cmd  # noqa: F401
    from nuimcli.cli import export_cmd  # noqa: F401
    from nuimcli.cli import benchmark_cmd  # noqa: F401
    from nuimcli.cli import browse_cmd, plot_cmd, stats_cmd  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``nuim`` console script (and ``python -m nuimcli``)."""
    from nuimcli.cli import interrupt

    args = fill_optional_values(expand_multi_value_options(list(sys.argv[1:] if argv is None else argv)))
    interrupt.reset()
    try:
        _register_commands()
        # Standalone mode: typer/click handle --help, usage errors (exit 2) and typer.Exit
        # themselves; our own exceptions pass through to here.
        # obj: what the commands may read of the invocation (how to run it again, for messages)
        app(args=args, prog_name="nuim", obj={"argv": args})
    except UserError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except PartialFailure as e:
        err_console.print(f"[bold yellow]some items failed:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except RunFailed as e:
        err_console.print(f"[bold red]failed:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, Interrupted) as e:
        stopped = e if isinstance(e, Interrupted) else interrupt.interrupted(args)
        err_console.print(f"[bold yellow]interrupted:[/] {escape(str(stopped))}", highlight=False, soft_wrap=True)
        sys.exit(stopped.exit_code)
