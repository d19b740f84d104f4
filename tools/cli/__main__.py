"""The ``grassroots`` command (installed by ``make install``; also ``python -m tools.cli``)."""

import argparse
import logging
import sys
import warnings

from tools.cli import EXIT_REFUSED, EXIT_USAGE, CliError


def build_parser():
    from tools.cli.call import add_call_command
    from tools.cli.deadletters import add_deadletters_command
    from tools.cli.tail import add_tail_command
    from tools.cli.tokens import add_token_command
    from tools.cli.tree import add_tree_command

    parser = argparse.ArgumentParser(
        prog="grassroots",
        description="Operator CLI for the Grassroots services.",
        epilog="Exit codes: 0 done, 1 the service refused the call, 2 bad usage or configuration, "
        "3 broker or service unreachable.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_token_command(commands)
    add_call_command(commands)
    add_tree_command(commands)
    add_tail_command(commands)
    add_deadletters_command(commands)
    return parser


def quiet_libraries():
    """No library warnings or log lines (eventlet, amqp...) between the CLI's own output, unless
    asked for with -W / PYTHONWARNINGS or an application that configured logging itself."""
    if not sys.warnoptions:
        warnings.simplefilter("ignore")
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())


def main(argv=None):
    quiet_libraries()
    from nameko.exceptions import BadRequest, RemoteError

    from tools.cli.output import fail, format_remote_error, print_error, stderr_console, stdout_console

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out, err = stdout_console(), stderr_console()
    try:
        return args.handler(args, out, err)
    except CliError as exc:
        fail(err, str(exc))
        return exc.code
    except (RemoteError, BadRequest) as exc:
        print_error(err, format_remote_error(exc))
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
