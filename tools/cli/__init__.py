"""``grassroots``: the operator CLI.

    grassroots token --sub alice --role officer --unit 12     # mint a JWT
    grassroots call grid.get_unit '{"unit_id": "12"}'          # call any RPC method
    grassroots tree 12 --depth 2 --campaign 3                  # a unit's subtree with counts
    grassroots tail --service grid --type 'incident_*'         # follow the suite's events
    grassroots deadletters list | replay --queue Q             # dead letters: see them, move them back

One module per command (``tokens``, ``call``, ``tree``, ``tail``, ``deadletters``), ``output`` for
what they print, ``__main__`` for the argument parser. Exit codes: 0 done, 1 the service refused the call,
2 bad usage or local configuration, 3 the broker or the service could not be reached.
"""

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class CliError(Exception):
    """A problem worth one line on stderr and an exit code, not a traceback."""

    def __init__(self, message, code=EXIT_USAGE):
        super().__init__(message)
        self.code = code
