"""One exception type for every user-facing failure.

The CLI turns it into a single line on stderr and exit code 2, so a bad input never ends in a
traceback from deep inside torch.
"""


class EdgeDistillError(Exception):
    """A problem with the user's input: the message names the thing and the fix."""

    exit_code = 2
