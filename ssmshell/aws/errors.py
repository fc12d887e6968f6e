"""Turn botocore exceptions into one-line :class:`~ssmshell.errors.UserError` s."""

from __future__ import annotations

import re

from ssmshell.errors import Exit, UserError

_NOT_AUTHORIZED = re.compile(r"not authorized to perform:? ([A-Za-z0-9-]+:[A-Za-z0-9]+)")
_THROTTLING = {"ThrottlingException", "Throttling", "TooManyRequestsException",
               "RequestLimitExceeded", "ThrottledException"}
_ACCESS = {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation",
           "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch"}
_EXPIRED = {"ExpiredTokenException", "ExpiredToken", "RequestExpired"}
_NOT_FOUND = {"InvalidTarget", "InvalidInstanceId", "ClusterNotFoundException",
              "InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed",
              "DoesNotExistException", "InvalidDocument"}
_KMS = {"InvalidCiphertextException", "KMSInvalidStateException", "DisabledException",
        "KMSInternalException", "InvalidKeyUsageException", "IncorrectKeyException"}


def translate(exc: BaseException, action: str, profile: str | None = None) -> UserError:
    """Map an exception raised while calling ``action`` (e.g. ``ssm:StartSession``).

    Args:
        exc: what botocore raised.
        action: the IAM action name of the call, for the access-denied message.
        profile: the profile in use, for the ``aws sso login`` hint.

    Returns:
        A :class:`UserError` with a distinct exit code.
    """
    import botocore.exceptions as bex

    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, bex.NoCredentialsError):
        return UserError("no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID, "
                         "or run 'aws configure' / 'aws sso login'", Exit.NO_CREDENTIALS)
    if isinstance(exc, bex.ProfileNotFound):
        return UserError(f"AWS profile not found: {exc.kwargs.get('profile', '')}",
                         Exit.NO_CREDENTIALS)
    sso_errors = tuple(getattr(bex, name) for name in (
        "SSOTokenLoadError", "UnauthorizedSSOTokenError", "TokenRetrievalError",
        "SSOError") if hasattr(bex, name))
    if isinstance(exc, sso_errors):
        return UserError("the AWS SSO session has expired or is missing: run 'aws sso login"
                         + _profile_hint(profile) + "'", Exit.SSO_EXPIRED)
    if isinstance(exc, (bex.EndpointConnectionError, bex.ConnectTimeoutError,
                        bex.ReadTimeoutError, bex.ConnectionClosedError)):
        return UserError(f"cannot reach the AWS endpoint for {action}: {_first_line(exc)}",
                         Exit.UNREACHABLE)
    if isinstance(exc, bex.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")) or "Unknown"
        message = _first_line(str(error.get("Message", "") or ""))
        if code in _ACCESS:
            match = _NOT_AUTHORIZED.search(message)
            needed = match.group(1) if match else action
            return UserError(f"access denied: the caller lacks the {needed} permission"
                             + (f" ({message})" if message else ""), Exit.ACCESS_DENIED)
        if code in _EXPIRED:
            return UserError("the AWS credentials have expired: refresh them (for SSO: "
                             "'aws sso login" + _profile_hint(profile) + "')", Exit.SSO_EXPIRED)
        if code in _THROTTLING:
            return UserError(f"{action} was throttled by AWS ({code}); try again shortly",
                             Exit.THROTTLED)
        if code == "TargetNotConnected":
            return UserError(f"target not connected: {message or 'the SSM agent is offline'}",
                             Exit.TARGET_NOT_CONNECTED)
        if code in _NOT_FOUND:
            return UserError(f"target not found: {message or code}", Exit.TARGET_NOT_FOUND)
        if code == "InvalidParameterException" and "execute command" in message.lower():
            return UserError(f"ECS Exec is not available on this task: {message}",
                             Exit.EXEC_NOT_ENABLED)
        if code in _KMS or action.startswith("kms:"):
            return UserError(f"KMS {action.split(':')[-1]} failed: {code}"
                             + (f": {message}" if message else ""), Exit.KMS_FAILED)
        return UserError(f"{action} failed: {code}" + (f": {message}" if message else ""),
                         Exit.AWS_ERROR)
    if isinstance(exc, bex.BotoCoreError):
        return UserError(f"{action} failed: {_first_line(exc)}", Exit.AWS_ERROR)
    return UserError(f"{action} failed: {_first_line(exc)}", Exit.ERROR)


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0][:300] if text else type(value).__name__


def _profile_hint(profile: str | None) -> str:
    import os

    profile = profile or os.environ.get("AWS_PROFILE")
    return f" --profile {profile}" if profile else ""
