"""Errors a user meets, each with one clear line and its own exit code.

The CLI prints ``ssmshell: <message>`` on stderr and exits with ``exit_code``;
never a traceback. Messages must not contain tokens, keys or credentials.
"""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    """ssmshell's own exit codes (documented in the README)."""

    OK = 0
    ERROR = 1  #: anything not listed below
    USAGE = 2  #: bad command line (click's own code)
    NO_CREDENTIALS = 3
    SSO_EXPIRED = 4
    ACCESS_DENIED = 5
    TARGET_NOT_FOUND = 6
    TARGET_NOT_CONNECTED = 7
    EXEC_NOT_ENABLED = 8  #: ECS task without enableExecuteCommand, or its agent not running
    AMBIGUOUS_TARGET = 9  #: several candidates and no terminal for the picker
    KMS_FAILED = 10  #: GenerateDataKey (other than access denied), context or challenge
    UNREACHABLE = 11  #: the websocket (or an AWS endpoint) could not be reached
    CONNECTION_LOST = 12  #: the session's connection dropped and could not be resumed
    PROTOCOL = 13  #: the peer broke the protocol (bad handshake, undecryptable data, …)
    THROTTLED = 14
    AWS_ERROR = 15  #: any other AWS API error
    INTERRUPTED = 130


class UserError(Exception):
    """An error to show as one line, with an exit code."""

    def __init__(self, message: str, exit_code: int = Exit.ERROR,
                 aws_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = int(exit_code)
        #: The AWS error code (``InvalidDocument``, …) when an AWS call failed.
        self.aws_code = aws_code

    def __str__(self) -> str:
        return self.message
