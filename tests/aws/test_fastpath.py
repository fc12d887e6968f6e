"""The botocore-free path for the session-time calls: the same SigV4 signature as
botocore's, taken only when nothing in the setup needs boto3."""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ssmshell.aws.api import Aws
from ssmshell.aws.fastpath import FastClient, ProcessCredentials, plan, sign
from ssmshell.errors import Exit, UserError
from ssmshell.local.server import LocalSessionManager

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
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    config = tmp_path / "config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    return config


def static(profile: str | None = None, region: str | None = None,
           endpoint_url: str | None = None) -> FastClient | None:
    """The client when the plan has static keys (botocore never imported), else None."""
    how = plan(profile, region, endpoint_url)
    return how.client() if how is not None and how.keys is not None else None


def test_taken_for_static_environment_credentials(clean_env: Path) -> None:
    client = static()
    assert client is not None
    assert client.endpoints == {"ssm": "https://ssm.us-east-1.amazonaws.com",
                                "kms": "https://kms.us-east-1.amazonaws.com"}
    assert "secret" not in repr(client) and "AKID" not in repr(client)


@pytest.mark.parametrize("change", [
    {"HTTPS_PROXY": "http://proxy:3128"}, {"AWS_USE_FIPS_ENDPOINT": "true"},
    {"AWS_REGION": "cn-north-1"},
])
def test_not_taken_when_boto3_is_needed(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                        change: dict[str, str]) -> None:
    for name, value in change.items():
        monkeypatch.setenv(name, value)
    assert plan(None, None, None) is None


def test_not_taken_with_configured_endpoints(clean_env: Path) -> None:
    clean_env.write_text("[default]\nendpoint_url = http://localhost:4566\n")
    assert plan(None, None, None) is None
    clean_env.write_text("[profile work]\nservices = local\n[services local]\n"
                         "ssm =\n  endpoint_url = http://localhost:4566\n")
    assert plan("work", None, None) is None
    assert plan(None, None, None) is not None  # only the profile that has it


def test_static_keys_of_a_profile(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env.write_text("[profile work]\nregion = eu-west-1\n")
    Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"]).write_text(
        "[work]\naws_access_key_id = AKIDWORK\naws_secret_access_key = worksecret\n"
        "aws_session_token = worktoken\n")
    monkeypatch.delenv("AWS_REGION")
    # --profile wins over the environment's keys, as in botocore's chain.
    client = static("work")
    assert client is not None
    assert (client.access_key, client.secret_key, client.token) == \
        ("AKIDWORK", "worksecret", "worktoken")
    assert client.region == "eu-west-1"
    assert client.endpoints["ssm"] == "https://ssm.eu-west-1.amazonaws.com"
    # AWS_PROFILE selects the profile, but the environment's keys come first.
    monkeypatch.setenv("AWS_PROFILE", "work")
    client = static()
    assert client is not None and client.access_key == "AKIDEXAMPLE"
    assert client.region == "eu-west-1"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    client = static()
    assert client is not None and client.access_key == "AKIDWORK"


def test_static_keys_in_the_config_file(clean_env: Path) -> None:
    clean_env.write_text("[profile cfg]\naws_access_key_id = AKIDCFG\n"
                         "aws_secret_access_key = cfgsecret\n")
    client = static("cfg")
    assert client is not None and client.access_key == "AKIDCFG" and client.token is None


@pytest.mark.parametrize("section", [
    "role_arn = arn:aws:iam::123456789012:role/r\nsource_profile = base",
    "sso_session = corp\nsso_account_id = 123456789012\nsso_role_name = Admin",
    "sso_start_url = https://corp.awsapps.com/start\nsso_region = us-east-1",
    "web_identity_token_file = /tmp/token\nrole_arn = arn:aws:iam::123456789012:role/r",
])
def test_other_credential_sources_are_left_to_botocore(clean_env: Path, section: str) -> None:
    clean_env.write_text(f"[profile work]\nregion = eu-west-1\n{section}\n")
    os.environ.pop("AWS_REGION")  # (monkeypatch restores it)
    how = plan("work", None, None)
    assert how is not None and how.keys is None and how.region == "eu-west-1"


def test_endpoint_url_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9")
    client = static()
    assert client is not None and client.endpoints["kms"] == "http://127.0.0.1:9"
    client = static(None, "eu-west-1", "http://127.0.0.1:8")
    assert client is not None and set(client.endpoints.values()) == {"http://127.0.0.1:8"}


#: A credential_process that counts its runs and prints the local SM's keys.
PROCESS = """import json, os, sys
open(sys.argv[1], "a").write("run\\n")
print(json.dumps({"Version": 1, "AccessKeyId": os.environ["LOCAL_KEY"],
                  "SecretAccessKey": os.environ["LOCAL_SECRET"]}))
"""


def test_process_credentials_sign_without_botocore(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        local_sm: LocalSessionManager) -> None:
    env = local_sm.client_env()
    script, runs = tmp_path / "creds.py", tmp_path / "runs"
    script.write_text(PROCESS)
    monkeypatch.setenv("LOCAL_KEY", env["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("LOCAL_SECRET", env["AWS_SECRET_ACCESS_KEY"])
    clean_env.write_text(f"[profile proc]\nregion = {env['AWS_REGION']}\n"
                         f"credential_process = {sys.executable} {script} {runs}\n")
    how = plan("proc", None, env["AWS_ENDPOINT_URL"])
    assert how is not None and how.keys is None and how.process is not None
    aws = Aws("proc", None, env["AWS_ENDPOINT_URL"])
    info = aws.start_session("i-0123456789abcdef0")
    assert info.session_id and info.token
    aws.call("ssm", "terminate_session", "ssm:TerminateSession", SessionId=info.session_id)
    assert aws._clients == {} and aws._session is None  # no boto3 session or client
    assert runs.read_text().count("run") == 1  # resolved once for both calls


def test_process_credentials_are_refreshed_before_they_expire(
        clean_env: Path, tmp_path: Path) -> None:
    script, runs = tmp_path / "creds.py", tmp_path / "runs"
    script.write_text("""import datetime, json, sys
n = open(sys.argv[1], "a+").tell() // 4
open(sys.argv[1], "a").write("run\\n")
soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=int(sys.argv[2]))
print(json.dumps({"Version": 1, "AccessKeyId": f"AKID{n}", "SecretAccessKey": "s",
                  "SessionToken": "t", "Expiration": soon.isoformat().replace("+00:00", "Z")}))
""")
    fresh = ProcessCredentials(f"{sys.executable} {script} {runs} 60")
    assert fresh.get_frozen_credentials() == ("AKID0", "s", "t")
    assert fresh.get_frozen_credentials().access_key == "AKID0"  # still valid: not re-run
    runs.unlink()
    expiring = ProcessCredentials(f"{sys.executable} {script} {runs} 5")
    assert expiring.get_frozen_credentials().access_key == "AKID0"
    assert expiring.get_frozen_credentials().access_key == "AKID1"  # within 15 min: re-run
    assert "AKID" not in repr(expiring)


@pytest.mark.parametrize("body, why", [
    ("raise SystemExit('token expired, run login')", "token expired, run login"),
    ("print('not json')", "not JSON"),
    ("print('{\"Version\": 2}')", "unsupported Version"),
    ("print('{\"Version\": 1, \"AccessKeyId\": \"A\"}')", "lacks SecretAccessKey"),
])
def test_process_credentials_failure_is_one_line(clean_env: Path, tmp_path: Path,
                                                 body: str, why: str) -> None:
    script = tmp_path / "creds.py"
    script.write_text(body + "\n")
    clean_env.write_text("[profile broken]\nregion = us-east-1\n"
                         f"credential_process = {sys.executable} {script}\n")
    with pytest.raises(UserError) as caught:
        Aws("broken", None, "http://127.0.0.1:9").start_session("i-0123456789abcdef0")
    assert str(caught.value).startswith(
        "cannot get AWS credentials from the profile's credential_process: ")
    assert why in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == Exit.NO_CREDENTIALS


def test_credentials_file_keys_come_before_credential_process(clean_env: Path) -> None:
    clean_env.write_text("[profile mixed]\ncredential_process = /bin/false\n"
                         "aws_access_key_id = AKIDCFG\naws_secret_access_key = c\n")
    how = plan("mixed", None, None)
    assert how is not None and how.process == "/bin/false"  # before the config file's keys
    Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"]).write_text(
        "[mixed]\naws_access_key_id = AKIDFILE\naws_secret_access_key = f\n")
    client = static("mixed")  # the credentials file comes first in botocore's chain
    assert client is not None and client.access_key == "AKIDFILE"


def test_aws_region_is_honoured_on_the_boto3_path(clean_env: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # no fast path
    aws = Aws()
    assert aws._fast_client() is None
    assert aws.region == "eu-west-1"
    assert aws.client("ssm").meta.region_name == "eu-west-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert Aws().region == "eu-west-1"  # AWS_REGION first, as the AWS CLI has it
