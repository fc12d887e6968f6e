"""ssmshell's own session document, which ``ssmshell setup`` creates in an account.

AWS's ``AWS-StartNonInteractiveCommand`` leaves ``separateOutputStream`` off, so its
sessions carry neither separate stdout/stderr nor the ``EXIT_CODE: n`` payload
(PROTOCOL.md §9.3). This document turns it on.
"""

from __future__ import annotations

from typing import Any

#: The document's name (``ssmshell run`` uses it unless ``--document-name`` says otherwise).
COMMAND_DOCUMENT = "SSMShell-NonInteractiveCommand"


def command_document_content() -> dict[str, Any]:
    """The document's content (schema 1.0, sessionType NonInteractiveCommands)."""
    linux: dict[str, Any] = {
        "commands": "{{ command }}", "runAsElevated": False,
        "separateOutputStream": True, "stdOutSeparatorPrefix": "", "stdErrSeparatorPrefix": "",
    }
    return {
        "schemaVersion": "1.0",
        "description": "ssmshell: run one command with separate stdout, stderr and exit code",
        "sessionType": "NonInteractiveCommands",
        "parameters": {"command": {"type": "String",
                                   "description": "The command to run on the node."}},
        "properties": {"linux": dict(linux), "macos": dict(linux), "windows": dict(linux)},
    }
