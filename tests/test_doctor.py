"""``ssmshell doctor`` against the local Session Manager (each ✗ the local world can
produce), against a fake AWS for what it cannot (old Fargate, task definitions, STS),
and ``ssmshell ls``."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ssmshell.cli import cli
from ssmshell.doctor import FAIL, OK, SKIP, WARN, Check, Doctor, doctor_hint
from ssmshell.errors import Exit, UserError
from ssmshell.local.config import Container, Instance, Task
from ssmshell.local.server import LocalSessionManager
from tests.conftest import ssmshell_argv

WEB_TASK = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
LEGACY_TASK = "2c3d4e5f60718293a4b5c6d7e8f90a1b"
PLAIN_TASK = "3d4e5f60718293a4b5c6d7e8f90a1b2c"
DENIED_KEY = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"


@pytest.fixture
def sm(local_sm: LocalSessionManager, monkeypatch: pytest.MonkeyPatch,
       tmp_path: Path) -> Iterator[LocalSessionManager]:
    """The local Session Manager, with this process's environment pointed at it."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "SSMSHELL_")):
            monkeypatch.delenv(name)
    for name, value in local_sm.client_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield local_sm


def doctor(*args: str) -> Result:
    return CliRunner().invoke(cli, ["doctor", *args])


def line(result: Result, start: str) -> str:
    """The output line starting with ``start`` (and the fix line after it, if any)."""
    lines = result.output.splitlines()
    for n, text in enumerate(lines):
        if text.startswith(start):
            fix = lines[n + 1] if n + 1 < len(lines) and lines[n + 1].startswith("    fix:") \
                else ""
            return f"{text}\n{fix}".rstrip()
    raise AssertionError(f"no line starting with {start!r} in:\n{result.output}")


# ----------------------------------------------------------------------------- ECS


def test_a_good_ecs_target_passes(sm: LocalSessionManager) -> None:
    result = doctor("--cluster", "demo", "--task", WEB_TASK)
    assert result.exit_code == 0, result.output
    assert line(result, "✓ credentials").endswith("from env")
    assert line(result, "✓ region") == "✓ region: us-east-1"
    assert line(result, "– caller identity").startswith("– caller identity: not checked")
    assert line(result, "✓ cluster demo")
    assert line(result, f"✓ task {WEB_TASK}") == f"✓ task {WEB_TASK}: RUNNING (service:web)"
    assert line(result, "✓ enableExecuteCommand")
    assert line(result, "✓ platform version") == "✓ platform version: Fargate 1.4.0"
    assert line(result, "✓ ExecuteCommandAgent in app")
    assert line(result, "✓ ExecuteCommandAgent in sidecar")
    assert line(result, "– task definition web:1").endswith("the endpoint does not serve it")
    assert "kms:GenerateDataKey allowed" in line(result, "✓ ECS Exec KMS key")
    assert result.output.rstrip().endswith("no problems found")
    assert "✗" not in result.output
    # --container narrows the container checks.
    one = doctor("--cluster", "demo", "--task", WEB_TASK, "--container", "sidecar")
    assert one.exit_code == 0 and "in app" not in one.output


def test_exec_disabled_on_a_standalone_task(sm: LocalSessionManager) -> None:
    result = doctor("--cluster", "demo", "--task", LEGACY_TASK)
    assert result.exit_code == 1
    text = line(result, "✗ enableExecuteCommand")
    assert "off" in text and "--enable-execute-command" in text and "run-task" in text
    assert "ExecuteCommandAgent" not in result.output  # no agent to check without exec
    assert result.output.rstrip().endswith("1 problem found")


def test_exec_disabled_on_a_service_task(sm: LocalSessionManager) -> None:
    sm.config.tasks[0].enable_execute_command = False
    result = doctor("--cluster", "demo", "--task", WEB_TASK)
    assert result.exit_code == 1
    assert "fix: aws ecs update-service --cluster demo --service web " \
        "--enable-execute-command --force-new-deployment" in line(result, "✗ enableExecute")


def test_agent_not_running(sm: LocalSessionManager) -> None:
    sm.config.tasks[0].containers[1].managed_agent_status = "STOPPED"
    result = doctor("--cluster", "demo", "--task", WEB_TASK)
    assert result.exit_code == 1
    assert line(result, "✓ ExecuteCommandAgent in app")
    text = line(result, "✗ ExecuteCommandAgent in sidecar")
    assert "STOPPED" in text and "ssmmessages:CreateControlChannel" in text
    assert "ssmmessages.us-east-1.amazonaws.com" in text


def test_task_not_running(sm: LocalSessionManager) -> None:
    sm.config.tasks[3].last_status = "STOPPED"
    result = doctor("--cluster", "plain", "--task", PLAIN_TASK)
    assert result.exit_code == 1
    text = line(result, f"✗ task {PLAIN_TASK}")
    assert "STOPPED" in text and "ssmshell ls tasks --cluster plain" in text


def test_task_or_cluster_not_found(sm: LocalSessionManager) -> None:
    result = doctor("--cluster", "demo", "--task", "f" * 32)
    assert result.exit_code == 1
    assert "not found in cluster demo" in line(result, f"✗ task {'f' * 32}")
    result = doctor("--cluster", "nope", "--task", WEB_TASK)
    assert result.exit_code == 1
    text = line(result, "✗ cluster nope")
    assert "not found in us-east-1" in text and "ssmshell ls clusters" in text


def test_container_not_in_task(sm: LocalSessionManager) -> None:
    result = doctor("--cluster", "demo", "--task", WEB_TASK, "--container", "db")
    assert result.exit_code == 1
    assert "it has: app, sidecar" in line(result, "✗ container db")


def test_cluster_kms_key_not_usable(sm: LocalSessionManager) -> None:
    sm.config.clusters[1].kms_key_id = DENIED_KEY
    result = doctor("--cluster", "plain", "--task", PLAIN_TASK)
    assert result.exit_code == 1
    text = line(result, "✗ ECS Exec KMS key")
    assert DENIED_KEY in text and "allow kms:GenerateDataKey" in text
    # A cluster without a key: nothing to check, but it is said.
    sm.config.clusters[1].kms_key_id = None
    result = doctor("--cluster", "plain", "--task", PLAIN_TASK)
    assert result.exit_code == 0
    assert "not KMS-encrypted" in line(result, "✓ ECS Exec KMS key")


def test_kms_denied_by_policy(sm: LocalSessionManager) -> None:
    sm.config.denied_actions = {"kms:GenerateDataKey"}
    result = doctor("--cluster", "demo")  # cluster-level checks only
    assert result.exit_code == 1
    assert "access denied" in line(result, "✗ ECS Exec KMS key")


def test_describe_tasks_denied(sm: LocalSessionManager) -> None:
    sm.config.denied_actions = {"ecs:DescribeTasks"}
    result = doctor("--cluster", "demo", "--task", WEB_TASK)
    assert result.exit_code == 1
    assert "fix: allow ecs:DescribeTasks" in line(result, f"✗ task {WEB_TASK}")


def test_the_cluster_comes_from_the_task_arn_or_is_the_only_one(
        sm: LocalSessionManager) -> None:
    arn = f"arn:aws:ecs:us-east-1:123456789012:task/plain/{PLAIN_TASK}"
    assert doctor("--task", arn).exit_code == 0
    result = doctor("--task", PLAIN_TASK)
    assert result.exit_code == 1 and "give --cluster" in line(result, "✗ cluster")
    sm.config.tasks = [t for t in sm.config.tasks if t.cluster == "plain"]
    sm.config.clusters = [c for c in sm.config.clusters if c.name == "plain"]
    assert doctor("--task", PLAIN_TASK).exit_code == 0


# ----------------------------------------------------------------------------- instances


def test_a_good_instance_passes(sm: LocalSessionManager) -> None:
    result = doctor("demo-web")
    assert result.exit_code == 0, result.output
    assert line(result, "✓ target demo-web") == "✓ target demo-web: i-0123456789abcdef0"
    assert line(result, "✓ SSM agent:") == "✓ SSM agent: Online"
    assert line(result, "✓ SSM agent version") == "✓ SSM agent version: 3.3.1142.0"
    assert line(result, "✓ platform") == "✓ platform: Linux, Amazon Linux 2023"
    assert line(result, "✓ session KMS key")


def test_instance_offline(sm: LocalSessionManager) -> None:
    result = doctor("i-00000000000000bad")
    assert result.exit_code == 1
    text = line(result, "✗ SSM agent:")
    assert "ConnectionLost" in text and "amazon-ssm-agent" in text


def test_instance_not_found(sm: LocalSessionManager) -> None:
    result = doctor("no-such-box")
    assert result.exit_code == 1
    assert "ssmshell ls instances" in line(result, "✗ target no-such-box")


def test_instance_not_a_managed_node(sm: LocalSessionManager) -> None:
    # An id is not looked up in EC2; an id SSM does not know is not registered.
    result = doctor("i-0000000000000abcd")
    assert result.exit_code == 1
    assert "AmazonSSMManagedInstanceCore" in line(result, "✗ SSM registration")


def test_agent_too_old_or_not_latest(sm: LocalSessionManager) -> None:
    sm.config.instances += [Instance("i-0000000000000a001", "old", agent_version="2.2.0.0"),
                            Instance("i-0000000000000a002", "oldish", agent_version="3.0.1.0")]
    result = doctor("old")
    assert result.exit_code == 1
    text = line(result, "✗ SSM agent version")
    assert "2.2.0.0" in text and "AWS-UpdateSSMAgent" in text
    result = doctor("oldish")
    assert result.exit_code == 0  # a warning only
    assert "a newer one exists" in line(result, "! SSM agent version")


def test_session_kms_key_not_usable(sm: LocalSessionManager) -> None:
    sm.config.documents["SSM-SessionManagerRunShell"] = {
        "schemaVersion": "1.0", "sessionType": "Standard_Stream",
        "inputs": {"kmsKeyId": "alias/ssmshell-denied"}}
    result = doctor("demo-web")
    assert result.exit_code == 1
    text = line(result, "✗ session KMS key")
    assert "alias/ssmshell-denied" in text and "the instance role" in text
    sm.config.documents["SSM-SessionManagerRunShell"]["inputs"]["kmsKeyId"] = \
        "alias/ssmshell-demo"
    result = doctor("demo-web")
    assert result.exit_code == 0
    assert "kms:GenerateDataKey allowed" in line(result, "✓ session KMS key")


# ----------------------------------------------------------------------------- basics


def test_no_credentials(sm: LocalSessionManager, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = doctor("--cluster", "demo", "--task", WEB_TASK)
    assert result.exit_code == 1
    text = line(result, "✗ credentials")
    assert "none found" in text and "aws configure" in text
    assert "cluster" not in result.output  # nothing else can work


def test_unknown_profile(sm: LocalSessionManager) -> None:
    result = doctor("--profile", "nope")
    assert result.exit_code == 1
    assert "nope" in line(result, "✗ credentials")


def test_no_region(sm: LocalSessionManager, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    result = doctor("demo-web")
    assert result.exit_code == 1
    assert "--region" in line(result, "✗ region")
    # The config file's default region counts.
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "ssmshell" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[defaults]\nregion = "us-east-1"\n')
    assert doctor("demo-web").exit_code == 0


def test_usage_errors(sm: LocalSessionManager) -> None:
    assert doctor("demo-web", "--cluster", "demo").exit_code == Exit.USAGE
    assert doctor("--container", "app").exit_code == Exit.USAGE


def test_doctor_as_a_program(cli_env: dict[str, str]) -> None:
    env = dict(cli_env, AWS_EC2_METADATA_DISABLED="true")
    ok = subprocess.run(ssmshell_argv("doctor", "demo-web"), env=env, capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "✓ SSM agent: Online" in ok.stdout and ok.stderr == ""
    bad = subprocess.run(ssmshell_argv("doctor", "demo-offline"), env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1 and "✗ SSM agent: ConnectionLost" in bad.stdout


def test_doctor_hint() -> None:
    assert doctor_hint("prod", "abc", "app") == \
        "ssmshell doctor --cluster prod --task abc --container app"
    assert doctor_hint(target="web 1") == "ssmshell doctor 'web 1'"
    assert doctor_hint("prod", "abc", target="ignored", profile="p", region="eu-west-1") == \
        "ssmshell doctor --cluster prod --task abc --profile p --region eu-west-1"


# ----------------------------------------------------------------------------- fake AWS


def aws_error(code: str, message: str = "") -> Exception:
    """What botocore raises for an AWS error ``code``."""
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}}, "Operation")


class FakeClient:
    def __init__(self, answers: dict[str, Any], endpoint: str) -> None:
        self.answers = answers
        self.meta = type("Meta", (), {"endpoint_url": endpoint})()

    def __getattr__(self, operation: str) -> Any:
        def call(**params: Any) -> Any:
            answer = self.answers[operation]
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call


class FakeAws:
    profile = None
    _region = None
    region = "eu-west-1"
    endpoint_url = None

    def __init__(self, answers: dict[str, dict[str, Any]],
                 endpoint: str = "https://sts.eu-west-1.amazonaws.com") -> None:
        self.answers = answers
        self.endpoint = endpoint

    def client(self, service: str) -> FakeClient:
        return FakeClient(self.answers.get(service, {}), self.endpoint)


def fake_task(**overrides: Any) -> dict[str, Any]:
    task = {
        "taskArn": f"arn:aws:ecs:eu-west-1:1:task/prod/{WEB_TASK}",
        "clusterArn": "arn:aws:ecs:eu-west-1:1:cluster/prod", "group": "service:api",
        "lastStatus": "RUNNING", "desiredStatus": "RUNNING", "enableExecuteCommand": True,
        "launchType": "FARGATE", "platformVersion": "1.4.0", "platformFamily": "Linux",
        "taskDefinitionArn": "arn:aws:ecs:eu-west-1:1:task-definition/api:7",
        "containers": [{"name": "app", "lastStatus": "RUNNING", "runtimeId": "r-1",
                        "managedAgents": [{"name": "ExecuteCommandAgent",
                                           "lastStatus": "RUNNING"}]}],
    }
    task.update(overrides)
    return task


def run_ecs(task: dict[str, Any], definition: Any = None) -> list[Check]:
    aws = FakeAws({"ecs": {
        "describe_clusters": {"clusters": [{"clusterName": "prod", "status": "ACTIVE"}]},
        "describe_tasks": {"tasks": [task]},
        "describe_task_definition": definition if definition is not None
        else aws_error("AccessDeniedException", "no"),
    }})
    doc = Doctor(aws)
    doc.check_ecs("prod", WEB_TASK, None)
    return doc.checks


def status_of(checks: list[Check], title: str) -> Check:
    return next(c for c in checks if c.title.startswith(title))


@pytest.mark.parametrize("version, status", [("1.3.0", FAIL), ("1.4.0", OK), ("1.10.1", OK),
                                             ("LATEST", OK)])
def test_fargate_platform_version(version: str, status: str) -> None:
    check = status_of(run_ecs(fake_task(platformVersion=version)), "platform version")
    assert check.status == status
    if status == FAIL:
        assert "--platform-version LATEST" in check.fix and "--service api" in check.fix


def test_ec2_launch_type_is_not_checked() -> None:
    checks = run_ecs(fake_task(launchType="EC2", platformVersion=None))
    assert status_of(checks, "platform version").status == SKIP


def test_task_definition_checks() -> None:
    definition = {"taskDefinition": {"containerDefinitions": [
        {"name": "app", "readonlyRootFilesystem": True}]}}
    checks = run_ecs(fake_task(), definition)
    readonly = status_of(checks, "readonlyRootFilesystem of app")
    assert readonly.status == FAIL and "false" in readonly.fix
    assert status_of(checks, "initProcessEnabled of app").status == WARN
    good = {"taskDefinition": {"containerDefinitions": [
        {"name": "app", "linuxParameters": {"initProcessEnabled": True}}]}}
    checks = run_ecs(fake_task(), good)
    assert status_of(checks, "readonlyRootFilesystem of app").status == OK
    assert status_of(checks, "initProcessEnabled of app").status == OK
    # Not allowed to read it: skipped, with the reason.
    denied = status_of(run_ecs(fake_task()), "task definition api:7")
    assert denied.status == SKIP and "access denied" in denied.detail


def test_agent_missing_or_pending_with_reason() -> None:
    task = fake_task(containers=[
        {"name": "a", "lastStatus": "RUNNING", "runtimeId": "r-1", "managedAgents": []},
        {"name": "b", "lastStatus": "RUNNING", "runtimeId": "r-2", "managedAgents": [
            {"name": "ExecuteCommandAgent", "lastStatus": "PENDING", "reason": "no route"}]},
        {"name": "c", "lastStatus": "PENDING", "managedAgents": [
            {"name": "ExecuteCommandAgent", "lastStatus": "RUNNING"}]}])
    checks = run_ecs(task)
    assert status_of(checks, "ExecuteCommandAgent in a").detail == "not reported by ECS"
    assert status_of(checks, "ExecuteCommandAgent in b").detail == "PENDING (no route)"
    assert status_of(checks, "container c").status == FAIL


def test_sts_failure_on_a_real_endpoint_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    class Credentials:
        method = "sso"

        def get_frozen_credentials(self) -> Any:
            return type("Frozen", (), {"access_key": "AKIA"})()

    aws = FakeAws({"sts": {"get_caller_identity": aws_error("ExpiredToken", "expired")}})
    aws.session = type("Session", (), {"get_credentials": lambda self: Credentials()})()
    doc = Doctor(aws)
    assert doc.check_basics()
    identity = status_of(doc.checks, "caller identity")
    assert identity.status == FAIL and "expired" in identity.detail
    local = FakeAws({"sts": {"get_caller_identity": aws_error("AuthFailure")}},
                    endpoint="http://127.0.0.1:4566")
    local.session = aws.session
    doc = Doctor(local)
    doc.check_basics()
    assert status_of(doc.checks, "caller identity").status == SKIP
    ok = FakeAws({"sts": {"get_caller_identity": {"Arn": "arn:aws:iam::1:user/me",
                                                  "Account": "1"}}})
    ok.session = aws.session
    doc = Doctor(ok)
    doc.check_basics()
    assert status_of(doc.checks, "caller identity").detail == \
        "arn:aws:iam::1:user/me (account 1)"
    assert not doc.failed


def test_call_failures_keep_the_code() -> None:
    from ssmshell.doctor import CallFailed

    doc = Doctor(FakeAws({"ecs": {"list_clusters": aws_error("UnknownOperationException")}}))
    with pytest.raises(CallFailed) as info:
        doc.call("ecs", "list_clusters", "ecs:ListClusters")
    assert info.value.code == "UnknownOperationException"
    assert isinstance(info.value.error, UserError)


# ----------------------------------------------------------------------------- ls


def test_ls(sm: LocalSessionManager) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["ls", "instances"])
    assert result.exit_code == 0
    rows = result.output.splitlines()
    assert rows[0].split() == ["INSTANCE", "NAME", "IP", "PLATFORM", "PING"]
    assert any(r.split()[:2] == ["i-0123456789abcdef0", "demo-web"] for r in rows)
    result = runner.invoke(cli, ["ls", "clusters", "--json"])
    assert [c["name"] for c in json.loads(result.output)] == ["demo", "plain"]
    result = runner.invoke(cli, ["ls", "tasks", "--cluster", "demo", "--service", "web",
                                 "--json"])
    tasks = json.loads(result.output)
    assert [(t["task_id"], t["containers"], t["exec"]) for t in tasks] == \
        [(WEB_TASK, ["app", "sidecar"], "enabled")]
    result = runner.invoke(cli, ["ls", "tasks"])
    assert LEGACY_TASK in result.output and PLAIN_TASK in result.output
    assert runner.invoke(cli, ["ls", "services", "--cluster", "plain"]).output.split() == \
        ["CLUSTER", "SERVICE", "plain", "api"]
    assert runner.invoke(cli, ["ls", "instances", "--cluster", "x"]).exit_code == Exit.USAGE
    sm.config.tasks.append(Task("e" * 32, "plain", [Container("x", "r")], family="x",
                                last_status="STOPPED"))
    assert "e" * 32 not in runner.invoke(cli, ["ls", "tasks"]).output
