"""The botocore-free path for the session-time calls: the same SigV4 signature as
botocore's, taken only when nothing in the setup needs boto3."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ssmshell.aws.fastpath import FastClient, from_environment, sign

NOW = datetime.datetime(2026, 11, 29, 6, 30, 0, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("token", [None, "session-token-value"])
def test_signature_equals_botocore(token: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.auth

    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda *a, **k: NOW.replace(tzinfo=None))
    client = FastClient("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token,
                        "eu-west-1", {})
    body = b'{"Target": "i-0123456789abcdef0"}'
    ours = sign(client, "ssm", "ssm.eu-west-1.amazonaws.com", "AmazonSSM.StartSession", body,
                NOW)
    request = AWSRequest(method="POST", url="https://ssm.eu-west-1.amazonaws.com/", data=body,
                         headers={"Content-Type": "application/x-amz-json-1.1",
                                  "X-Amz-Target": "AmazonSSM.StartSession"})
    auth = SigV4Auth(Credentials(client.access_key, client.secret_key, token), "ssm",
                     "eu-west-1")
    auth.add_auth(request)
    theirs = request.headers["Authorization"]
    # botocore signs the same headers (it adds x-amz-date/-security-token itself).
    assert ours["authorization"].split("Signature=")[1] == theirs.split("Signature=")[1]
    assert ours["authorization"] == theirs


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(__import__("os").environ):
        if name.startswith("AWS_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    config = tmp_path / "config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    return config


def test_taken_for_static_environment_credentials(clean_env: Path) -> None:
    client = from_environment(None, None, None)
    assert client is not None
    assert client.endpoints == {"ssm": "https://ssm.us-east-1.amazonaws.com",
                                "kms": "https://kms.us-east-1.amazonaws.com"}
    assert "secret" not in repr(client)


@pytest.mark.parametrize("change", [
    {"AWS_PROFILE": "work"}, {"HTTPS_PROXY": "http://proxy:3128"},
{"AWS_USE_FIPS_ENDPOINT": "true"},
    {"AWS_REGION": "cn-north-1"}, {"AWS_SECRET_ACCESS_KEY": ""},
])
def test_not_taken_when_boto3_is_needed(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                        change: dict[str, str]) -> None:
    for name, value in change.items():
        monkeypatch.setenv(name, value)
    assert from_environment(None, None, None) is None


def test_not_taken_with_a_profile_or_configured_endpoints(clean_env: Path) -> None:
    assert from_environment("work", None, None) is None
    clean_env.write_text("[default]\nendpoint_url = http://localhost:4566\n")
    assert from_environment(None, None, None) is None


def test_endpoint_url_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9")
    client = from_environment(None, None, None)
    assert client is not None and client.endpoints["kms"] == "http://127.0.0.1:9"
    client = from_environment(None, "eu-west-1", "http://127.0.0.1:8")
    assert client is not None and set(client.endpoints.values()) == {"http://127.0.0.1:8"}
