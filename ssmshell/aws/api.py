"""Session Manager API calls through boto3 (§2), imported lazily to keep start-up fast.

Everything here returns plain values or raises :class:`~ssmshell.errors.UserError`;
nothing here knows about websockets, terminals or click.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from ssmshell.aws.errors import translate
from ssmshell.errors import Exit, UserError

_UNSET = object()
#: The calls :mod:`ssmshell.aws.fastpath` can make without botocore.
_FAST_CALLS = {("ssm", "start_session"), ("ssm", "resume_session"),
               ("ssm", "terminate_session"), ("kms", "generate_data_key")}


@dataclass(frozen=True)
class SessionInfo:
    """What StartSession / ExecuteCommand return; the token never shows in ``repr``."""

    session_id: str
    stream_url: str
    token: str = field(repr=False)
    target_id: str = ""


class Aws:
    """boto3 clients for one profile/region/endpoint, created on first use.

    Args:
        profile: AWS profile name (``--profile``); None = boto3's default chain.
        region: region name (``--region``); None = ``AWS_REGION``, else boto3's
            (``AWS_DEFAULT_REGION``, the profile's).
        endpoint_url: one endpoint for every service (``--endpoint-url``); boto3 also
            honours ``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>``.
    """

    def __init__(self, profile: str | None = None, region: str | None = None,
                 endpoint_url: str | None = None) -> None:
        self.profile = profile
        # AWS_REGION is the AWS CLI's and the other SDKs' (before AWS_DEFAULT_REGION);
        # botocore reads only AWS_DEFAULT_REGION.
        self._region = region or os.environ.get("AWS_REGION") or None
        self.endpoint_url = endpoint_url
        self._session: Any = None
        self._clients: dict[str, Any] = {}
        self._fast: Any = _UNSET

    @property
    def session(self) -> Any:
        """The boto3 Session (lazily imported)."""
        if self._session is None:
            import boto3
            import botocore.exceptions as bex

            try:
                self._session = boto3.session.Session(profile_name=self.profile,
                                                      region_name=self._region)
            except bex.ProfileNotFound as exc:
                raise translate(exc, "configuration", self.profile) from None
        return self._session

    @property
    def region(self) -> str:
        """The region in use.

        Raises:
            UserError: no region is configured.
        """
        fast = self._fast_client()
        region = self._region or (fast.region if fast is not None else None) or \
            self.session.region_name
        if not region:
            raise UserError("no AWS region configured: use --region or set AWS_REGION",
                            Exit.USAGE)
        return str(region)

    def client(self, service: str) -> Any:
        """A cached boto3 client for ``service`` (ssm, ecs, ec2, kms)."""
        if service not in self._clients:
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 3},
                            connect_timeout=5, read_timeout=30,
                            user_agent_extra="ssmshell")
            self._clients[service] = self.session.client(
                service, region_name=self.region, endpoint_url=self.endpoint_url,
                config=config)
        return self._clients[service]

    def call(self, service: str, operation: str, action: str, **params: Any) -> Any:
        """Call ``operation`` (snake_case) on ``service``, translating errors.

        Args:
            service: boto3 service name.
            operation: client method name, e.g. ``start_session``.
            action: the IAM action, e.g. ``ssm:StartSession``, for messages.
            params: the request parameters.

        Raises:
            UserError: any failure, as one line with its exit code.
        """
        fast = self._fast_client() if (service, operation) in _FAST_CALLS else None
        if fast is not None:
            return self._call_fast(fast, service, operation, action, params)
        try:
            return getattr(self.client(service), operation)(**params)
        except UserError:
            raise
        except Exception as exc:
            error = translate(exc, action, self.profile)
            response = getattr(exc, "response", None)
            if isinstance(response, dict):
                error.aws_code = response.get("Error", {}).get("Code")
            raise error from None

    def _fast_client(self) -> Any:
        """The client-free path for the session-time calls, when the setup allows
        (:mod:`ssmshell.aws.fastpath`); credentials other than static keys and
        ``credential_process`` come from this object's boto3 session, so they are
        resolved once and refreshed."""
        if self._fast is _UNSET:
            from ssmshell.aws.fastpath import plan

            how = plan(self.profile, self._region, self.endpoint_url)
            if how is None:
                self._fast = None
            elif how.keys is not None or how.process is not None:
                self._fast = how.client()  # static keys, or ssmshell runs credential_process
            else:
                try:
                    credentials = self.session.get_credentials()
                except Exception:  # the boto3 path meets (and reports) it again
                    credentials = None
                self._fast = how.client(credentials) if credentials is not None else None
        return self._fast

    def _call_fast(self, fast: Any, service: str, operation: str, action: str,
                   params: dict[str, Any]) -> Any:
        from ssmshell.aws.fastpath import FastCallError

        try:
            out = fast.call(service, operation, params)
        except FastCallError as exc:
            import botocore.exceptions as bex  # only on the error path

            error = translate(bex.ClientError(
                {"Error": {"Code": exc.code, "Message": exc.message},
                 "ResponseMetadata": {"HTTPStatusCode": exc.status}},
                "".join(w.title() for w in operation.split("_"))), action, self.profile)
            error.aws_code = exc.code
            raise error from None
        except OSError as exc:
            raise UserError(f"cannot reach the AWS endpoint for {action}: {exc}",
                            Exit.UNREACHABLE) from None
        except Exception as exc:  # botocore resolving the credentials: SSO, assume-role, …
            raise translate(exc, action, self.profile) from None
        if operation == "generate_data_key":
            import base64

            for key in ("Plaintext", "CiphertextBlob"):
                out[key] = base64.b64decode(out[key])
        return out

    # ------------------------------------------------------------------ sessions

    def start_session(self, target: str, document_name: str | None = None,
                      parameters: dict[str, list[str]] | None = None,
                      reason: str | None = None) -> SessionInfo:
        """ssm:StartSession (§2.1)."""
        params: dict[str, Any] = {"Target": target}
        if document_name:
            params["DocumentName"] = document_name
        if parameters:
            params["Parameters"] = parameters
        if reason:
            params["Reason"] = reason
        out = self.call("ssm", "start_session", "ssm:StartSession", **params)
        return SessionInfo(out["SessionId"], out["StreamUrl"], out["TokenValue"], target)

    def execute_command(self, cluster: str, task: str, container: str, command: str,
                        target_id: str) -> SessionInfo:
        """ecs:ExecuteCommand (§2.2); ``target_id`` is the §2.3 string for KMS."""
        out = self.call("ecs", "execute_command", "ecs:ExecuteCommand", cluster=cluster,
                        task=task, container=container, command=command, interactive=True)
        session = out["session"]
        return SessionInfo(session["sessionId"], session["streamUrl"], session["tokenValue"],
                           target_id)

    def resume_session(self, session_id: str) -> tuple[str | None, str | None]:
        """ssm:ResumeSession (§2.4): (token, stream_url); a None token = session gone."""
        out = self.call("ssm", "resume_session", "ssm:ResumeSession", SessionId=session_id)
        return out.get("TokenValue") or None, out.get("StreamUrl") or None

    def terminate_session(self, session_id: str) -> None:
        """ssm:TerminateSession (§2.5), best effort: errors are ignored."""
        with contextlib.suppress(UserError):
            self.call("ssm", "terminate_session", "ssm:TerminateSession", SessionId=session_id)

    def generate_data_key(self, key_id: str, context: dict[str, str]) -> tuple[bytes, bytes]:
        """kms:GenerateDataKey with 64 bytes and the session's context (§8.1)."""
        out = self.call("kms", "generate_data_key", "kms:GenerateDataKey", KeyId=key_id,
                        NumberOfBytes=64, EncryptionContext=context)
        return bytes(out["Plaintext"]), bytes(out["CiphertextBlob"])


def parse_parameters(text: str | None) -> dict[str, list[str]] | None:
    """``--parameters`` as JSON (``{"portNumber":["80"]}``; scalars are wrapped in lists).

    Raises:
        UserError: not a JSON object.
    """
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise UserError("--parameters must be a JSON object, e.g. "
                        "'{\"command\":[\"uptime\"]}'", Exit.USAGE) from None
    if not isinstance(value, dict):
        raise UserError("--parameters must be a JSON object", Exit.USAGE)
    return {str(k): [str(x) for x in (v if isinstance(v, list) else [v])]
            for k, v in value.items()}
