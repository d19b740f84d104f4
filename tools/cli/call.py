"""``grassroots call <service>.<method> '<json kwargs>'``: call any RPC method, print the result."""

import argparse
import json
import re

from tools.cli import EXIT_REFUSED
from tools.cli.connect import DEFAULT_TIMEOUT, add_amqp_option, amqp_uri, rpc_proxy, unreachable
from tools.cli.output import format_remote_error, print_error, print_json
from tools.cli.tokens import add_caller_options, caller_token

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def add_call_command(commands):
    parser = commands.add_parser(
        "call",
        help="call an RPC method and print its JSON result",
        description="Call <service>.<method> with keyword arguments given as a JSON object, e.g. "
        """grassroots call grid.count_residents '{"under": "12", "tags_any": ["elderly_alone"]}'""",
    )
    parser.add_argument("target", metavar="SERVICE.METHOD", type=parse_target, help="e.g. grid.get_unit")
    parser.add_argument(
        "kwargs",
        metavar="JSON",
        nargs="?",
        default="{}",
        type=parse_kwargs,
        help="keyword arguments as a JSON object (default {})",
    )
    add_caller_options(parser)
    add_amqp_option(parser)
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the reply (default {DEFAULT_TIMEOUT:g})",
    )
    parser.set_defaults(handler=run_call)


def parse_target(value):
    service, dot, method = value.partition(".")
    if not dot or not _NAME.match(service) or not _NAME.match(method):
        raise argparse.ArgumentTypeError(f"expected SERVICE.METHOD, e.g. grid.get_unit (got {value!r})")
    return service, method


def parse_kwargs(value):
    try:
        kwargs = json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(kwargs, dict):
        raise argparse.ArgumentTypeError('must be a JSON object of keyword arguments, e.g. \'{"unit_id": "12"}\'')
    return kwargs


def run_call(args, out, err):
    from nameko.exceptions import BadRequest, RemoteError

    service, method = args.target
    target = f"{service}.{method}"
    uri = amqp_uri(args)
    with rpc_proxy(uri, caller_token(args), timeout=args.timeout) as rpc:
        try:
            result = getattr(rpc[service], method)(**args.kwargs)
        except (RemoteError, BadRequest) as exc:
            print_error(err, format_remote_error(exc, target))
            return EXIT_REFUSED
        except Exception as exc:
            problem = unreachable(exc, target, args.timeout)
            if problem is None:
                raise
            raise problem from None
    print_json(out, result)
    return 0
