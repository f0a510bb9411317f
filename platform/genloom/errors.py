"""Errors the library raises on purpose.

Every GenloomError carries a message that is already fit for a user: the CLI
prints it as one line and exits non-zero; the HTTP API turns it into a JSON body.
"""


class GenloomError(Exception):
    """Base class: a problem the user can act on, described in one line.

    `cli_hint` is advice that names a command or flag ("create it with: genloom ingest …"):
    the CLI appends it; the HTTP API, whose callers have no flags, leaves it out.
    """

    exit_code = 1

    def __init__(self, *args, cli_hint: str | None = None):
        super().__init__(*args)
        self.cli_hint = cli_hint


class ConfigError(GenloomError):
    """Bad configuration: DATABASE_URL, GENLOOM_HOME and the like."""


class DatabaseError(GenloomError):
    """The database cannot be reached or lacks something genloom needs."""


class NotFound(GenloomError):
    """A named thing (collection, dataset, model, generation, ...) does not exist."""


class BadInput(GenloomError):
    """The user's input is malformed or out of range."""


class JobInterrupted(GenloomError):
    """A job stopped by Ctrl-C or SIGTERM at a safe point; the message says what it had committed.

    Raised (from the KeyboardInterrupt) once the job has cleaned up and recorded its run as
    interrupted; the CLI prints it as `interrupted: …` and exits 130, as a shell does for SIGINT."""

    exit_code = 130


class GateFailed(GenloomError):
    """A gated comparison (`eval retrieval --compare … --require-better`) did not show the change better."""


class Unauthorized(GenloomError):
    """No credentials, or credentials that do not check out (HTTP 401)."""


class Forbidden(GenloomError):
    """Valid credentials whose role does not allow the action (HTTP 403)."""


def one_line(text: str) -> str:
    """`text` with control characters shown as escapes (\\n, \\x1b, …): a file name holding a
    newline or a terminal escape cannot forge another line of output (e.g. a fake `error:`)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
