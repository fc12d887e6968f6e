"""Sessions of the local Session Manager: records, single-use tokens, session documents.

Used by the AWS endpoints (StartSession, ExecuteCommand, ResumeSession,
TerminateSession, DescribeSessions) and by the gateway (token check, record
lookup). Everything runs on one event loop thread; no locks.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PREFIX_PATTERN = re.compile(r"^[0-9a-zA-Z\r\n_:-]{0,30}$")  # §9.3


class DocumentError(Exception):
    """A session document problem; ``code`` is the AWS error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


#: The AWS-managed session documents the local service knows (§2.1, §2.7).
BUILTIN_DOCUMENTS: dict[str, dict[str, Any]] = {
    "SSM-SessionManagerRunShell": {"sessionType": "Standard_Stream"},
    "AWS-StartInteractiveCommand": {
        "sessionType": "InteractiveCommands",
        "parameters": {"command": {"type": "String"}},
        "properties": {"linux": {"commands": "{{ command }}"}}},
    "AWS-StartNonInteractiveCommand": {
        "sessionType": "NonInteractiveCommands",
        "parameters": {"command": {"type": "String"}},
        "properties": {"linux": {"commands": "{{ command }}"}}},
    # ssmshell's own document (created in real accounts by `ssmshell setup`).
    "SSMShell-NonInteractiveCommand": {
        "sessionType": "NonInteractiveCommands",
        "parameters": {"command": {"type": "String"}},
        "properties": {"linux": {"commands": "{{ command }}", "separateOutputStream": True}}},
    "AWS-StartPortForwardingSession": {
        "sessionType": "Port",
        "parameters": {"portNumber": {"type": "String", "default": "80"},
                       "localPortNumber": {"type": "String", "default": "0"}},
        "properties": {"portNumber": "{{ portNumber }}", "type": "LocalPortForwarding",
                       "localPortNumber": "{{ localPortNumber }}"}},
    "AWS-StartPortForwardingSessionToRemoteHost": {
        "sessionType": "Port",
        "parameters": {"host": {"type": "String"},
                       "portNumber": {"type": "String", "default": "80"},
                       "localPortNumber": {"type": "String", "default": "0"}},
        "properties": {"host": "{{ host }}", "portNumber": "{{ portNumber }}",
                       "type": "LocalPortForwarding",
                       "localPortNumber": "{{ localPortNumber }}"}},
    "AWS-StartSSHSession": {
        "sessionType": "Port",
        "parameters": {"portNumber": {"type": "String", "default": "22"}},
        "properties": {"portNumber": "{{ portNumber }}"}},
}

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass
class ResolvedDocument:
    """A session document after parameter substitution."""

    session_type: str
    properties: dict[str, Any] | None
    command: str | None
    separate_output_stream: bool
    stdout_prefix: str
    stderr_prefix: str


def resolve_document(content: dict[str, Any], parameters: dict[str, list[str]]) -> ResolvedDocument:
    """Substitute ``{{ name }}`` parameters into a session document's properties.

    Raises:
        DocumentError: unknown or missing parameters, bad prefixes.
    """
    declared = content.get("parameters") or {}
    unknown = set(parameters) - set(declared)
    if unknown:
        raise DocumentError("InvalidParameters",
                            f"Parameters {sorted(unknown)} are not defined in the document.")
    values: dict[str, str] = {}
    for name, spec in declared.items():
        given = parameters.get(name)
        if given:
            values[name] = str(given[0])
        elif isinstance(spec, dict) and "default" in spec:
            values[name] = str(spec["default"])
        else:
            values[name] = ""

    def substitute(value: Any) -> Any:
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), value)
        if isinstance(value, dict):
            return {k: substitute(v) for k, v in value.items()}
        if isinstance(value, list):
            return [substitute(v) for v in value]
        return value

    session_type = str(content.get("sessionType", "Standard_Stream"))
    properties = substitute(content.get("properties") or {})
    if session_type == "Port":
        return ResolvedDocument(session_type, {k: str(v) for k, v in properties.items()},
                                None, False, "", "")
    linux = properties.get("linux", properties) if isinstance(properties, dict) else {}
    commands = linux.get("commands") if isinstance(linux, dict) else None
    if isinstance(commands, list):
        commands = "\n".join(str(c) for c in commands)
    separate = str(linux.get("separateOutputStream", "false")).lower() == "true" \
        if isinstance(linux, dict) else False
    prefixes = []
    for key in ("stdOutSeparatorPrefix", "stdErrSeparatorPrefix"):
        prefix = str(linux.get(key, "")) if isinstance(linux, dict) else ""
        if not PREFIX_PATTERN.match(prefix):
            raise DocumentError("InvalidDocumentContent", f"{key} is invalid")
        prefixes.append(prefix)
    return ResolvedDocument(session_type, None, commands or None, separate,
                            prefixes[0], prefixes[1])


@dataclass
class SessionRecord:
    """One session as the service knows it."""

    session_id: str
    target: str  # the agent's own target id: i-…, mi-… or ecs:<cluster>_<task>_<runtime>
    document_name: str
    session_type: str
    properties: dict[str, Any] | None = None
    command: str | None = None
    separate_output_stream: bool = False
    stdout_prefix: str = ""
    stderr_prefix: str = ""
    kms_key_id: str | None = None
    reason: str | None = None
    owner: str = ""
    status: str = "Connected"
    start_date: float = field(default_factory=time.time)
    end_date: float | None = None
    stream_url: str = ""
    tokens: set[str] = field(default_factory=set, repr=False)

    @property
    def active(self) -> bool:
        return self.status not in ("Terminated", "Failed")


class Registry:
    """All sessions of one local Session Manager.

    Args:
        stream_url_for: builds the StreamUrl of a session id (the gateway's).
    """

    def __init__(self, stream_url_for: Callable[[str], str]) -> None:
        self._stream_url_for = stream_url_for
        self.sessions: dict[str, SessionRecord] = {}
        self._listeners: list[Callable[[str], None]] = []
        self.tokens_issued = 0

    def create_session(self, *, prefix: str, target: str, document_name: str,
                       document: ResolvedDocument, kms_key_id: str | None,
                       reason: str | None = None, owner: str = "") -> tuple[SessionRecord, str]:
        """Create a session and its first token.

        Returns:
            ``(record, token)``.
        """
        session_id = f"{prefix}-{secrets.token_hex(9)[:17]}"
        record = SessionRecord(
            session_id=session_id, target=target, document_name=document_name,
            session_type=document.session_type, properties=document.properties,
            command=document.command, separate_output_stream=document.separate_output_stream,
            stdout_prefix=document.stdout_prefix, stderr_prefix=document.stderr_prefix,
            kms_key_id=None if document.session_type == "Port" else kms_key_id,
            reason=reason, owner=owner, stream_url=self._stream_url_for(session_id))
        self.sessions[session_id] = record
        return record, self._issue(record)

    def _issue(self, record: SessionRecord) -> str:
        token = secrets.token_urlsafe(48)
        record.tokens.add(token)
        self.tokens_issued += 1
        return token

    def get(self, session_id: str) -> SessionRecord | None:
        return self.sessions.get(session_id)

    def resume(self, session_id: str) -> str | None:
        """A fresh token for an active session, or None (terminated or unknown)."""
        record = self.sessions.get(session_id)
        if record is None or not record.active:
            return None
        return self._issue(record)

    def consume_token(self, session_id: str, token: str) -> bool:
        """Check and burn a token (single use). Unknown/used tokens → False."""
        record = self.sessions.get(session_id)
        if record is None or not record.active:
            return False
        for candidate in list(record.tokens):
            if hmac.compare_digest(candidate.encode(), token.encode()):
                record.tokens.discard(candidate)
                return True
        return False

    def add_terminate_listener(self, callback: Callable[[str], None]) -> None:
        """``callback(session_id)`` runs when a session is terminated."""
        self._listeners.append(callback)

    def terminate(self, session_id: str) -> bool:
        """Mark a session terminated and tell the listeners; False if unknown."""
        record = self.sessions.get(session_id)
        if record is None:
            return False
        if record.active:
            record.status = "Terminated"
            record.end_date = time.time()
            record.tokens.clear()
            for callback in self._listeners:
                callback(session_id)
        return True
