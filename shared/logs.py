"""Structured JSON logs carrying the nameko call id chain.

Log records never carry call arguments: personal data stays out of logs.
"""

import json
import logging
import sys
import traceback

from eventlet import corolocal

_context = corolocal.local()

# Attributes a log call may add with ``extra=``; anything else is dropped.
EXTRA_FIELDS = (
    "service",
    "entrypoint",
    "method",
    "outcome",
    "duration_ms",
    "error_type",
    "event_type",
    "event_id",
    "attempt",
    "count",
    "unit_id",
    "reason",
)

MAX_CALL_ID_STACK = 100
MAX_CALL_ID = 300
# A log line's message is cut there: messages of other libraries' lines (nameko's "error handling
# worker …: <exception>") can quote what a caller sent — a field name of any length, say.
MAX_MESSAGE = 1000


def call_id_stack_problem(value):
    """None when ``value`` (a ``nameko.call_id_stack`` header off the wire) is a list of call ids
    nameko and these logs can carry, else why not. nameko extends a deque with it in the worker:
    anything else (an integer, say) raised there and killed the container."""
    from shared.validation import text_problem

    if not isinstance(value, list) or len(value) > MAX_CALL_ID_STACK:
        return f"Must be a list of at most {MAX_CALL_ID_STACK} call ids."
    for item in value:
        if not isinstance(item, str) or len(item) > MAX_CALL_ID or text_problem(item):
            return f"Each call id must be text of at most {MAX_CALL_ID} characters."
    return None


def bind_call(service, call_id, call_id_stack):
    # One look-up of the greenthread's attributes (each attribute access of a corolocal costs one).
    _context.__dict__.update(service=service, call_id=call_id, call_id_stack=call_id_stack)


def current_call_id():
    return getattr(_context, "call_id", None)


def unbind_call():
    for name in ("service", "call_id", "call_id_stack"):
        _context.__dict__.pop(name, None)


def bounded(message):
    """``message`` cut to MAX_MESSAGE characters, saying how long it was."""
    if len(message) <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE]}… (cut: {len(message)} characters)"


def skip_record_lookups():
    """Our JSON lines never show the thread, process or calling function: logging need not look them up
    for every record (~20 µs a line under eventlet). Process-wide switches, so the runner turns them off
    only when these lines are the process's only format (no LOGGING config of the operator's)."""
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None


class JsonFormatter(logging.Formatter):
    # Every call logs a line: the second's text is made once a second, and the call's context read
    # with one look-up (each attribute of an eventlet corolocal costs one).
    _second = None
    _second_text = ""

    def format(self, record):
        second = int(record.created)
        if second != self._second:
            self._second_text = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
            self._second = second
        entry = {
            "time": f"{self._second_text}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": bounded(record.getMessage()),
        }
        context = _context.__dict__
        for name in ("service", "call_id", "call_id_stack"):
            value = context.get(name)
            if value is not None:
                entry[name] = value
        for name in EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            # Type and stack only: exception messages can quote input values.
            exc_type, _, tb = record.exc_info
            entry["error_type"] = exc_type.__name__
            entry["stack"] = "".join(traceback.format_tb(tb))[-4000:]
        return json.dumps(entry, ensure_ascii=False, default=str)


JsonFormatter.converter = __import__("time").gmtime


def configure(level="INFO"):
    """JSON logs on stderr for scripts and tests (services use the LOGGING config key)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
