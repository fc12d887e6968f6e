"""Sessions of the local Session Manager: records, single-use tokens, termination.

Shared by the AWS endpoints (StartSession, ExecuteCommand, ResumeSession,
TerminateSession, DescribeSessions) and the websocket gateway (token check on
OpenDataChannel, record lookup, termination). Everything runs on one event
loop thread, so there are no locks.

Tokens (PROTOCOL.md §2.1, §12): each session has at most one valid token at a
time. StartSession / ExecuteCommand issue the first one, ResumeSession replaces
it, and the gateway burns it with :meth:`Registry.consume_token` when it accepts
an OpenDataChannel. Tokens never appear in a ``repr`` or a log line.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger("ssmshell.local.registry")

SESSION_TYPES = ("Standard_Stream", "InteractiveCommands", "NonInteractiveCommands", "Port")
#: DescribeSessions statuses (ssm:SessionStatus).
STATUSES = ("Connected", "Connecting", "Disconnected", "Terminated", "Terminating", "Failed")
_ENDED = ("Terminated", "Failed")
#: Session ids are ``<principal>-<17 hex>``; ECS Exec ones ``ecs-execute-command-<17 hex>``.
ECS_SESSION_PREFIX = "ecs-execute-command"


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class SessionRecord:
    """One session as the service knows it.

    Attributes:
        session_id: ``<principal>-<17 hex>`` or ``ecs-execute-command-<17 hex>``.
        target: the agent's own target id (§2.3): ``i-…``, ``mi-…`` or
            ``ecs:<cluster>_<taskId>_<runtimeId>``; also the KMS ``aws:ssm:TargetId``.
        document_name: the session document (``AmazonECS-ExecuteInteractiveCommand``
            for ECS Exec).
        session_type: ``Standard_Stream``, ``InteractiveCommands``,
            ``NonInteractiveCommands`` or ``Port``.
        properties: the document's properties after substitution (Port only, else None).
        command: the command of command-type sessions.
        separate_output_stream: NonInteractiveCommands stdout/stderr/exit-code mode (§9.3).
        stdout_prefix: ``stdOutSeparatorPrefix``.
        stderr_prefix: ``stdErrSeparatorPrefix``.
        kms_key_id: the key the agent asks the client to use (None: not encrypted;
            always None for Port sessions, §10.1).
        reason: StartSession ``Reason``.
        owner: the caller's ARN.
        status: one of :data:`STATUSES`.
        start_date: creation time (UTC).
        end_date: termination time, or None.
        stream_url: the websocket URL handed out (the gateway's).
    """

    session_id: str
    target: str
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
    start_date: datetime = field(default_factory=_now)
    end_date: datetime | None = None
    stream_url: str = ""
    token: str | None = field(default=None, repr=False, compare=False)

    @property
    def active(self) -> bool:
        """Not terminated (DescribeSessions State ``Active``)."""
        return self.status not in _ENDED

    @property
    def is_ecs(self) -> bool:
        """An ECS Exec session (ExecuteCommand)."""
        return self.session_id.startswith(ECS_SESSION_PREFIX + "-")


class Registry:
    """All sessions of one local Session Manager.

    Args:
        stream_url_for: builds the StreamUrl of a session id (the gateway's
            :meth:`stream_url`); called when a session is created.
    """

    def __init__(self, stream_url_for: Callable[[str], str]) -> None:
        self._stream_url_for = stream_url_for
        self._records: dict[str, SessionRecord] = {}
        self._terminate_listeners: list[Callable[[str], None]] = []
        #: How many tokens were handed out (StartSession, ExecuteCommand, ResumeSession).
        self.tokens_issued = 0
        #: Every token handed out, when a test asks for it (``keep_tokens = True``) to prove
        #: they never leak; off by default so a long-running server keeps none.
        self.keep_tokens = False
        self.issued_tokens: list[str] = []

    def __len__(self) -> int:
        return len(self._records)

    def create_session(self, *, target: str, document_name: str, session_type: str,
                       id_prefix: str, properties: dict[str, Any] | None = None,
                       command: str | None = None, separate_output_stream: bool = False,
                       stdout_prefix: str = "", stderr_prefix: str = "",
                       kms_key_id: str | None = None, reason: str | None = None,
                       owner: str = "") -> tuple[SessionRecord, str]:
        """Create a session and its first token.

        Args:
            target: the agent's target id (see :class:`SessionRecord`).
            document_name: the session document's name.
            session_type: one of :data:`SESSION_TYPES`.
            id_prefix: the principal name (SSM) or :data:`ECS_SESSION_PREFIX`.
            properties: Port properties (ignored for other types).
            command: the command of command-type sessions.
            separate_output_stream: NonInteractiveCommands separate streams.
            stdout_prefix: stdout separator prefix.
            stderr_prefix: stderr separator prefix.
            kms_key_id: the session's KMS key (forced to None for Port sessions).
            reason: the StartSession Reason.
            owner: the caller's ARN.

        Returns:
            ``(record, token)``; the token is valid for one OpenDataChannel.

        Raises:
            ValueError: an unknown session type.
        """
        if session_type not in SESSION_TYPES:
            raise ValueError(f"unknown session type {session_type!r}")
        session_id = f"{id_prefix}-{secrets.token_hex(9)[:17]}"
        while session_id in self._records:  # pragma: no cover - 68 random bits
            session_id = f"{id_prefix}-{secrets.token_hex(9)[:17]}"
        is_port = session_type == "Port"
        record = SessionRecord(
            session_id=session_id, target=target, document_name=document_name,
            session_type=session_type, properties=dict(properties or {}) if is_port else None,
            command=None if is_port else command,
            separate_output_stream=separate_output_stream and not is_port,
            stdout_prefix=stdout_prefix, stderr_prefix=stderr_prefix,
            kms_key_id=None if is_port else kms_key_id, reason=reason, owner=owner,
            stream_url=self._stream_url_for(session_id))
        self._records[session_id] = record
        return record, self._issue(record)

    def _issue(self, record: SessionRecord) -> str:
        record.token = secrets.token_urlsafe(48)
        self.tokens_issued += 1
        if self.keep_tokens:
            self.issued_tokens.append(record.token)
        return record.token

    def get(self, session_id: str) -> SessionRecord | None:
        """The record of ``session_id`` (any state), or None."""
        return self._records.get(session_id)

    def resume(self, session_id: str) -> str | None:
        """A fresh token for an active session (the previous one stops working).

        Returns:
            The token, or None when the session is terminated or unknown.
        """
        record = self._records.get(session_id)
        if record is None or not record.active:
            return None
        return self._issue(record)

    def consume_token(self, session_id: str, token: str) -> bool:
        """Check and burn the session's token (the gateway calls this once per open).

        Returns:
            True for the current, unused token of an active session; False for a
            used, replaced, wrong or unknown token, or a terminated session.
        """
        record = self._records.get(session_id)
        if record is None or not record.active or record.token is None:
            return False
        if not isinstance(token, str) or not hmac.compare_digest(
                record.token.encode(), token.encode()):
            return False
        record.token = None
        return True

    def set_status(self, session_id: str, status: str) -> None:
        """Set a live session's status (``Connected``, ``Disconnected``, …) for DescribeSessions.

        Use :meth:`terminate` to end a session; this never revives an ended one.

        Raises:
            ValueError: an unknown status.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown session status {status!r}")
        record = self._records.get(session_id)
        if record is not None and record.active and status not in _ENDED:
            record.status = status

    def add_terminate_listener(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(session_id)`` whenever a session is terminated (once per session)."""
        self._terminate_listeners.append(callback)

    def remove_terminate_listener(self, callback: Callable[[str], None]) -> None:
        """Undo :meth:`add_terminate_listener` (no error if absent)."""
        if callback in self._terminate_listeners:
            self._terminate_listeners.remove(callback)

    def terminate(self, session_id: str, status: str = "Terminated") -> bool:
        """Mark a session ended, burn its token and tell the listeners.

        Idempotent: listeners run only the first time. A listener that raises is
        logged and does not stop the others.

        Args:
            session_id: the session.
            status: ``Terminated`` (default) or ``Failed``.

        Returns:
            False if the session is unknown.
        """
        record = self._records.get(session_id)
        if record is None:
            return False
        if not record.active:
            return True
        record.status = status if status in _ENDED else "Terminated"
        record.end_date = _now()
        record.token = None
        for callback in list(self._terminate_listeners):
            try:
                callback(session_id)
            except Exception:
                log.exception("terminate listener failed for session %s", session_id)
        return True

    def sessions(self, state: str | None = None) -> list[SessionRecord]:
        """Records in creation order; ``state`` ``Active`` or ``History`` filters them.

        Raises:
            ValueError: another ``state``.
        """
        if state not in (None, "Active", "History"):
            raise ValueError(f"unknown session state {state!r}")
        records = list(self._records.values())
        if state == "Active":
            return [r for r in records if r.active]
        if state == "History":
            return [r for r in records if not r.active]
        return records
