"""The four session-time calls without botocore's clients, when nothing about the setup needs them.

Importing botocore and loading the SSM and KMS service models costs about 120 ms and
30 MB before StartSession can go out. StartSession, GenerateDataKey, ResumeSession and
TerminateSession are plain AWS JSON 1.1 POSTs, so when nothing else is configured (no
proxy, CA bundle, FIPS/dual-stack or configured endpoints, a standard-partition
region) ssmshell signs them itself with SigV4. :func:`plan` says how:

* static credentials from the environment or from the profile's section of the
  shared credentials/config files, or a profile's ``credential_process``:
  botocore is never imported (:class:`ProcessCredentials` runs the process as
  botocore's provider does);
* any other credential source (SSO, assume-role, web identity, container or
  instance metadata): boto3's session resolves (and refreshes) the credentials,
  but no botocore client or service model is made;
* anything else: None, and boto3 does the work.
"""

from __future__ import annotations

import configparser
import datetime
import hashlib
import hmac
import json
import os
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple
from urllib.parse import urlsplit

#: ``(service, operation)`` → the ``X-Amz-Target`` of the calls this module makes.
TARGETS = {
    ("ssm", "start_session"): "AmazonSSM.StartSession",
    ("ssm", "resume_session"): "AmazonSSM.ResumeSession",
    ("ssm", "terminate_session"): "AmazonSSM.TerminateSession",
    ("kms", "generate_data_key"): "TrentService.GenerateDataKey",
}
_REGION = re.compile(r"^(?:us|eu|ap|sa|ca|me|af|il|mx)-[a-z]+-\d$")
#: Settings that change how boto3 would reach AWS: any of them → no fast path.
_ENV_BLOCKERS = ("HTTPS_PROXY", "https_proxy",
                 "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "AWS_USE_FIPS_ENDPOINT",
                 "AWS_USE_DUALSTACK_ENDPOINT",
                 "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_STS_REGIONAL_ENDPOINTS")
_CONFIG_BLOCKERS = ("endpoint_url", "services", "ca_bundle", "use_fips_endpoint",
                    "use_dualstack_endpoint", "ignore_configure_endpoint_urls",
                    "ignore_configured_endpoint_urls")
#: Profile keys that mean botocore's own providers get the credentials (a profile's
#: ``credential_process`` ssmshell runs itself, see :class:`ProcessCredentials`).
_INDIRECT = ("role_arn", "source_profile", "credential_source", "web_identity_token_file",
             "sso_start_url", "sso_session", "sso_account_id", "sso_role_name")
#: Environment variables that put another provider before the shared files in
#: botocore's chain (web identity).
_ENV_INDIRECT = ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN")
ATTEMPTS = 3
#: Process credentials are fetched again this long before they expire (botocore's
#: advisory refresh).
REFRESH_BEFORE = 15 * 60


class FastCallError(Exception):
    """An AWS error response: ``code`` and ``message`` as the service sent them."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class FastClient:
    """Static credentials, a region and per-service endpoints."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    region: str = ""
    endpoints: dict[str, str] = field(default_factory=dict)
    #: botocore credentials (refreshable) to sign with instead of the static keys.
    provider: Any = field(default=None, repr=False, compare=False)

    def call(self, service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """POST one JSON 1.1 request; returns the decoded response.

        Raises:
            FastCallError: the service answered with an error.
            OSError: the endpoint could not be reached (after retries).
        """
        body = json.dumps(params).encode()
        target = TARGETS[(service, operation)]
        url = urlsplit(self.endpoints[service])
        delay = 0.05
        for attempt in range(ATTEMPTS):
            try:
                status, data = self._post(url, service, target, body)
            except OSError:
                if attempt == ATTEMPTS - 1:
                    raise
            else:
                if status < 400:
                    result: dict[str, Any] = json.loads(data or b"{}")
                    return result
                error = _error(status, data)
                retryable = status >= 500 or "Throttl" in error.code or \
                    error.code == "TooManyRequestsException"
                if not retryable or attempt == ATTEMPTS - 1:
                    raise error
            time.sleep(delay)
            delay *= 4
        raise AssertionError("unreachable")

    def _post(self, url: Any, service: str, target: str, body: bytes) -> tuple[int, bytes]:
        import http.client

        host = url.netloc
        keys = self
        if self.provider is not None:  # resolved (and refreshed) by botocore
            frozen = self.provider.get_frozen_credentials()
            keys = replace(self, access_key=frozen.access_key, secret_key=frozen.secret_key,
                           token=frozen.token or None)
        headers = sign(keys, service, host, target, body, datetime.datetime.now(
            datetime.timezone.utc))
        if url.scheme == "https":
            import ssl

            # The CA bundle botocore would use: AWS_CA_BUNDLE, then REQUESTS_CA_BUNDLE.
            bundle = os.environ.get("AWS_CA_BUNDLE") or os.environ.get("REQUESTS_CA_BUNDLE")
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, timeout=30, context=ssl.create_default_context(cafile=bundle or None))
        else:
            conn = http.client.HTTPConnection(host, timeout=30)
        try:
            conn.request("POST", url.path or "/", body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def sign(client: FastClient, service: str, host: str, target: str, body: bytes,
         now: datetime.datetime) -> dict[str, str]:
    """The request headers, Authorization included (AWS Signature Version 4)."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers = {"content-type": "application/x-amz-json-1.1", "host": host,
               "x-amz-date": amz_date, "x-amz-target": target}
    if client.token:
        headers["x-amz-security-token"] = client.token
    names = sorted(headers)
    signed = ";".join(names)
    canonical = "\n".join(["POST", "/", "", *(f"{n}:{headers[n].strip()}" for n in names), "",
                           signed, hashlib.sha256(body).hexdigest()])
    scope = f"{day}/{client.region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + client.secret_key).encode()
    for part in (day, client.region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={client.access_key}/{scope}, "
                                f"SignedHeaders={signed}, Signature={signature}")
    return headers


def _error(status: int, data: bytes) -> FastCallError:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    code = str(doc.get("__type") or doc.get("code") or f"HTTP{status}").rsplit("#", 1)[-1]
    message = str(doc.get("message") or doc.get("Message") or "")
    return FastCallError(code, message, status)


class Keys(NamedTuple):
    """Resolved credentials (botocore's ReadOnlyCredentials has the same fields)."""

    access_key: str
    secret_key: str
    token: str | None


class ProcessCredentials:
    """Keys from a profile's ``credential_process``, got as botocore's ProcessProvider
    gets them: the command split into words as a shell would (no shell runs), its
    JSON output with ``Version`` 1, fetched again 15 minutes before ``Expiration``.

    Args:
        command: the ``credential_process`` value.
    """

    def __init__(self, command: str) -> None:
        self.command = command
        self._keys: Keys | None = None
        self._expires: float | None = None

    def __repr__(self) -> str:  # never the keys
        return "ProcessCredentials()"

    def get_frozen_credentials(self) -> Keys:
        """The current keys, running the process when there are none or they expire soon.

        Raises:
            UserError: the process failed or printed something unusable (one line,
                exit code NO_CREDENTIALS).
        """
        if self._keys is None or (
                self._expires is not None and time.time() >= self._expires - REFRESH_BEFORE):
            self._keys, self._expires = self._run()
        return self._keys

    def _run(self) -> tuple[Keys, float | None]:
        import shlex
        import subprocess

        from ssmshell.errors import Exit, UserError

        def fail(why: str) -> UserError:
            return UserError(f"cannot get AWS credentials from the profile's "
                             f"credential_process: {why}", Exit.NO_CREDENTIALS)

        try:
            done = subprocess.run(shlex.split(self.command, posix=os.name != "nt"),
                                  capture_output=True, check=False)
        except (OSError, ValueError) as exc:
            raise fail(str(exc) or type(exc).__name__) from None
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            raise fail(lines[-1][:300] if lines else f"exit status {done.returncode}")
        try:
            doc = json.loads(done.stdout)
        except ValueError:
            raise fail("its output is not JSON") from None
        if not isinstance(doc, dict) or doc.get("Version") != 1:
            raise fail("unsupported Version (only 1 is)")
        try:
            keys = Keys(str(doc["AccessKeyId"]), str(doc["SecretAccessKey"]),
                        str(doc["SessionToken"]) if doc.get("SessionToken") else None)
        except KeyError as exc:
            raise fail(f"its output lacks {exc.args[0]}") from None
        expires = None
        if doc.get("Expiration"):
            try:
                when = datetime.datetime.fromisoformat(
                    str(doc["Expiration"]).replace("Z", "+00:00"))
            except ValueError:
                raise fail("Expiration is not an ISO 8601 time") from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.timezone.utc)
            expires = when.timestamp()
        return keys, expires


@dataclass(frozen=True)
class Plan:
    """How to make the session-time calls: static keys, a ``credential_process`` to
    run, or neither = ask botocore's credential chain."""

    keys: Keys | None = field(repr=False)
    region: str
    endpoints: dict[str, str]
    #: The profile's ``credential_process``, when that is where the keys come from.
    process: str | None = field(default=None, repr=False)

    def client(self, provider: Any = None) -> FastClient:
        """The client, with ``provider`` (botocore credentials) when there are no keys."""
        access, secret, token = self.keys or ("", "", None)
        if provider is None and self.process is not None:
            provider = ProcessCredentials(self.process)
        return FastClient(access, secret, token, self.region, self.endpoints, provider)


def plan(profile: str | None, region: str | None, endpoint_url: str | None) -> Plan | None:
    """How the setup lets ssmshell make the session-time calls itself, or None."""
    env = os.environ
    if any(env.get(name) for name in _ENV_BLOCKERS):
        return None
    name = profile or env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    config = _section(env.get("AWS_CONFIG_FILE") or "~/.aws/config",
                      name if name == "default" else f"profile {name}")
    shared = _section(env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials", name)
    if config is None or shared is None or any(key in config for key in _CONFIG_BLOCKERS):
        return None
    region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or \
        config.get("region")
    if not region or not _REGION.match(region):
        return None
    endpoints = {}
    for service in ("ssm", "kms"):
        endpoint = endpoint_url or env.get(f"AWS_ENDPOINT_URL_{service.upper()}") or \
            env.get("AWS_ENDPOINT_URL") or f"https://{service}.{region}.amazonaws.com"
        if urlsplit(endpoint).scheme not in ("http", "https"):
            return None
        endpoints[service] = endpoint
    keys, process = _credential_source(env, profile, config, shared)
    return Plan(keys, region, endpoints, process)


def _credential_source(env: Any, explicit_profile: str | None, config: dict[str, str],
                       shared: dict[str, str]) -> tuple[Keys | None, str | None]:
    """(the keys, None) when botocore's credential chain would yield static ones,
    (None, the command) when it would run the profile's ``credential_process``,
    (None, None) when one of its other providers would decide.

    botocore's order: the environment (skipped when ``--profile`` is given),
    assume-role, web identity, SSO, the credentials file, ``credential_process``,
    the config file, then container and instance roles. Any other indirect source
    in the profile leaves the whole decision to botocore.
    """
    if not explicit_profile and env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return Keys(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                    env.get("AWS_SESSION_TOKEN") or None), None
    if any(env.get(name) for name in _ENV_INDIRECT) or \
            any(key in section for section in (config, shared) for key in _INDIRECT):
        return None, None
    keys = _section_keys(shared)
    if keys is not None:
        return keys, None
    # The credentials file's section is merged over the config file's, as botocore does.
    process = shared.get("credential_process") or config.get("credential_process")
    if process:
        return None, process
    return _section_keys(config), None


def _section_keys(section: dict[str, str]) -> Keys | None:
    if section.get("aws_access_key_id") and section.get("aws_secret_access_key"):
        return Keys(section["aws_access_key_id"], section["aws_secret_access_key"],
                    section.get("aws_session_token") or None)
    return None


def _section(path: str, name: str) -> dict[str, str] | None:
    """One section of an AWS ini file ({} when absent), None when the file is unreadable."""
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        return {}
    parser = configparser.RawConfigParser()
    try:
        parser.read(path)
    except (configparser.Error, UnicodeDecodeError):
        return None
    return dict(parser.items(name)) if parser.has_section(name) else {}
