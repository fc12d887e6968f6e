"""The four session-time calls without botocore, when nothing about the setup needs it.

Importing botocore and loading the SSM and KMS service models costs about 120 ms and
30 MB before StartSession can go out. StartSession, GenerateDataKey, ResumeSession and
TerminateSession are plain AWS JSON 1.1 POSTs, so when the credentials are static
ones from the environment and nothing else is configured (no profile, proxy, CA
bundle, FIPS/dual-stack or configured endpoints, a standard-partition region),
ssmshell signs them itself with SigV4. In every other case :func:`from_environment`
returns None and boto3 does the work (SSO, assume-role, process credentials, …).
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
from dataclasses import dataclass, field
from typing import Any
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
_ENV_BLOCKERS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "HTTPS_PROXY", "https_proxy",
                 "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "AWS_USE_FIPS_ENDPOINT",
                 "AWS_USE_DUALSTACK_ENDPOINT",
                 "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_STS_REGIONAL_ENDPOINTS")
_CONFIG_BLOCKERS = ("endpoint_url", "services", "ca_bundle", "use_fips_endpoint",
                    "use_dualstack_endpoint", "ignore_configure_endpoint_urls",
                    "ignore_configured_endpoint_urls")
ATTEMPTS = 3


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
        headers = sign(self, service, host, target, body, datetime.datetime.now(
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


def from_environment(profile: str | None, region: str | None,
                     endpoint_url: str | None) -> FastClient | None:
    """A :class:`FastClient` when the setup is simple enough, else None."""
    env = os.environ
    access_key, secret_key = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if profile or not access_key or not secret_key:
        return None
    if any(env.get(name) for name in _ENV_BLOCKERS):
        return None
    region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region or not _REGION.match(region):
        return None
    config = env.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config")
    if os.path.exists(config):
        parser = configparser.RawConfigParser()
        try:
            parser.read(config)
        except configparser.Error:
            return None
        if parser.has_section("default") and any(
                parser.has_option("default", key) for key in _CONFIG_BLOCKERS):
            return None
    endpoints = {}
    for service in ("ssm", "kms"):
        endpoint = endpoint_url or env.get(f"AWS_ENDPOINT_URL_{service.upper()}") or \
            env.get("AWS_ENDPOINT_URL") or f"https://{service}.{region}.amazonaws.com"
        if urlsplit(endpoint).scheme not in ("http", "https"):
            return None
        endpoints[service] = endpoint
    return FastClient(access_key, secret_key, env.get("AWS_SESSION_TOKEN") or None, region,
                      endpoints)
