"""ssmshell in place of ``session-manager-plugin``, with the AWS CLI's calling convention.

Installed as (or linked to) a file named ``session-manager-plugin`` on PATH, ssmshell
takes the calls ``aws ssm start-session`` and ``aws ecs execute-command`` make:

* no arguments: the plugin's "installed successfully" line (the AWS CLI's check);
* ``--version``: the plugin version whose protocol ssmshell speaks;
* ``RESPONSE REGION StartSession [PROFILE] [REQUEST] [ENDPOINT]``: RESPONSE is the
  StartSession/ExecuteCommand ``session`` JSON, or the name of the environment
  variable that holds it (``AWS_SSM_START_SESSION_RESPONSE``, which the AWS CLI
  uses for plugins newer than 1.2.497.0); REQUEST is the StartSession request JSON
  (``Target``, ``DocumentName``, ``Parameters``); ENDPOINT is the SSM endpoint.

The session type follows the request: the port-forwarding documents (or a
``localPortNumber`` / ``localUnixSocket`` parameter) forward a local port and
print the plugin's ``Port N opened for sessionId …`` / ``Waiting for
connections...`` lines on stdout, as scripts expect; ``AWS-StartSSHSession`` (a
``portNumber`` without a local side) bridges stdin/stdout; everything else is an
interactive session whose exit status is the remote one when the agent sends it
(documents with separate output streams).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from ssmshell.errors import Exit, UserError

#: What the official plugin prints when run without arguments.
INSTALLED = ("The Session Manager plugin was installed successfully. "
             "Use the AWS CLI to start a session.")
PORT_DOCUMENTS = ("AWS-StartPortForwardingSession", "AWS-StartPortForwardingSessionToRemoteHost")
SSH_DOCUMENT = "AWS-StartSSHSession"


def main(argv: list[str]) -> int:
    """Run one plugin invocation; returns the exit status."""
    try:
        return _main(argv)
    except UserError as exc:
        print(f"ssmshell: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0


def _main(argv: list[str]) -> int:
    from ssmshell.protocol.state import CLIENT_VERSION

    if not argv:
        print(INSTALLED)
        return 0
    if argv[0] in ("--version", "-version", "version"):
        print(CLIENT_VERSION)
        return 0
    if len(argv) < 3:
        raise UserError("usage: session-manager-plugin RESPONSE REGION StartSession "
                        "[PROFILE] [REQUEST] [ENDPOINT]", Exit.USAGE)
    if argv[2] != "StartSession":
        raise UserError(f"unknown operation {argv[2]!r}: only StartSession is supported",
                        Exit.USAGE)
    response = _json_argument(argv[0], "the session response", from_environment=True)
    request = _json_argument(argv[4], "the request") if len(argv) > 4 and argv[4] else {}
    profile = argv[3] if len(argv) > 3 and argv[3] else None
    endpoint = argv[5] if len(argv) > 5 else ""
    return run(response, argv[1], profile, request, endpoint)


def _json_argument(text: str, what: str, *, from_environment: bool = False) -> dict[str, Any]:
    if from_environment and not text.lstrip().startswith("{"):
        value = os.environ.get(text)
        if value is None:
            raise UserError(f"{what} is neither JSON nor a set environment variable",
                            Exit.USAGE)
        text = value
    try:
        parsed = json.loads(text)
    except ValueError:
        raise UserError(f"{what} is not valid JSON", Exit.USAGE) from None
    if not isinstance(parsed, dict):
        raise UserError(f"{what} is not a JSON object", Exit.USAGE)
    return parsed


def run(response: dict[str, Any], region: str, profile: str | None,
        request: dict[str, Any], endpoint: str) -> int:
    """Attach to the session the AWS CLI started and run it to its end."""
    from ssmshell.aws.api import Aws, SessionInfo
    from ssmshell.runner import channel_options, run_shell, run_stdio

    # ExecuteCommand's ``session`` spells the keys sessionId/streamUrl/tokenValue; the
    # plugin's JSON decoding ignores case, and so does this.
    fields = {str(key).lower(): value for key, value in response.items()}
    try:
        info = SessionInfo(str(fields["sessionid"]), str(fields["streamurl"]),
                           str(fields["tokenvalue"]), str(request.get("Target", "")))
    except KeyError as exc:
        raise UserError(f"the session response has no {exc.args[0]}", Exit.USAGE) from None
    host = urlsplit(endpoint).hostname or ""
    if endpoint and not host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        # A local or private endpoint (the AWS CLI's --endpoint-url): ResumeSession and
        # TerminateSession go there. AWS's own endpoints are left to the default
        # resolution: `aws ecs execute-command` passes the ECS endpoint here.
        os.environ["AWS_ENDPOINT_URL_SSM"] = endpoint
    aws = Aws(profile=profile, region=region or None)
    document = str(request.get("DocumentName") or "")
    parameters = request.get("Parameters") or {}
    if not isinstance(parameters, dict):
        parameters = {}
    options = channel_options()
    print(f"\nStarting session with SessionId: {info.session_id}", file=sys.stderr)
    if document in PORT_DOCUMENTS or "localPortNumber" in parameters \
            or "localUnixSocket" in parameters:
        return _port(aws, info, parameters, options)
    if document == SSH_DOCUMENT or "portNumber" in parameters:
        return run_stdio(aws, info, options)
    return run_shell(aws, info, options)


def _first(parameters: dict[str, Any], name: str) -> str:
    value = parameters.get(name)
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value or "")


def _port(aws: Any, info: Any, parameters: dict[str, Any], options: Any) -> int:
    from ssmshell.runner import run_forwards
    from ssmshell.sessions.ports import Listen

    socket_path = _first(parameters, "localUnixSocket")
    local = _first(parameters, "localPortNumber") or "0"
    if not local.isdigit() or int(local) > 65535:
        raise UserError(f"localPortNumber {local!r} is not a port number", Exit.USAGE)
    listen = Listen(unix_path=socket_path) if socket_path else Listen(port=int(local))

    def ready(bound: str) -> None:
        what = f"Unix socket {bound}" if socket_path else f"Port {bound.rsplit(':', 1)[-1]}"
        print(f"{what} opened for sessionId {info.session_id}.\nWaiting for connections...",
              flush=True)

    return run_forwards(aws, [(info, listen, ready)], options)
