"""What the CLI prints: JSON results, readable remote errors, one-line failures."""

import json
import sys

from rich.console import Console
from rich.text import Text


def stdout_console():
    return Console(highlight=False)


def stderr_console():
    return Console(stderr=True, highlight=False)


def print_json(console, data):
    """Pretty, coloured on a terminal, and always valid JSON (never wrapped)."""
    console.print_json(data=data, ensure_ascii=False, default=str)


def print_plain(text):
    """Bare text for shell capture (``TOKEN=$(grassroots token ...)``): no wrapping, no styling."""
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def fail(console, message):
    console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


def print_error(console, text):
    """An error, never hard-wrapped (so it greps and copies whole)."""
    console.print(text, soft_wrap=True)


def flatten_fields(fields, prefix=""):
    """(field, message) pairs from marshmallow-style messages; nested fields become ``a.b``."""
    if isinstance(fields, dict):
        for key in sorted(fields, key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            yield from flatten_fields(fields[key], name)
    elif isinstance(fields, (list, tuple)):
        for item in fields:
            yield from flatten_fields(item, prefix)
    else:
        yield prefix or "_", str(fields)


def validation_fields(exc):
    """The bad fields of a ValidationError, typed (``.fields``) or plain ``RemoteError`` (JSON value)."""
    fields = getattr(exc, "fields", None)
    if fields:
        return fields
    try:
        value = json.loads(getattr(exc, "value", "") or "")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def format_remote_error(exc, target=None):
    """A remote error as readable text: one of ``shared.errors``, a nameko ``RemoteError``, or the
    nameko ``BadRequest`` kinds (``MethodNotFound``...)."""
    exc_type = getattr(exc, "exc_type", None) or type(exc).__name__
    value = getattr(exc, "value", None)
    message = str(value if value is not None else exc)
    if exc_type == "MethodNotFound" and target:
        message = f"{target.split('.')[0]} has no method {message!r}"
    text = Text()
    text.append(exc_type, style="bold red")
    if exc_type == "ValidationError":
        fields = validation_fields(exc)
        if fields:
            text.append(f": {target} refused its arguments" if target else ": invalid arguments")
            for name, problem in flatten_fields(fields):
                text.append("\n  ")
                text.append(name, style="bold")
                text.append(f": {problem}")
            return text
    if message:
        text.append(f": {message}")
    return text
