"""``ssmshell doctor``: why can't I connect? Each check prints ✓, ✗ (with a fix), – (skipped)
or ! (a warning, with a suggestion); the exit code is 0 when nothing failed.

* Always: credentials (and where they come from), the region, the caller identity
  (sts:GetCallerIdentity; skipped when a local endpoint does not serve STS).
* ``--cluster C --task T [--container N]``: the cluster and its ECS Exec KMS key
  (kms:GenerateDataKey must be allowed), the task is RUNNING with enableExecuteCommand,
  the Fargate platform version (≥ 1.4.0), each container's ExecuteCommandAgent, and —
  when ecs:DescribeTaskDefinition answers — readonlyRootFilesystem and initProcessEnabled.
* ``TARGET``: it resolves to a managed node, which is Online, with a recent enough
  agent; its platform; the Session Manager preferences' KMS key, if any.

:func:`doctor_hint` gives the command line to suggest after a connection error.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import click

from ssmshell.cliopts import aws_options, handle_errors, make_aws
from ssmshell.completion import (
    complete_clusters,
    complete_containers,
    complete_instances,
    complete_tasks,
)
from ssmshell.errors import Exit, UserError

OK, FAIL, SKIP, WARN = "ok", "fail", "skip", "warn"
_MARKS = {OK: "✓", FAIL: "✗", SKIP: "–", WARN: "!"}
_ASCII_MARKS = {OK: "OK", FAIL: "XX", SKIP: "--", WARN: "!!"}
_COLORS = {OK: "green", FAIL: "red", SKIP: None, WARN: "yellow"}

#: The oldest SSM agent Session Manager works with.
MIN_AGENT_VERSION = (2, 3, 68, 0)
#: The oldest Fargate (Linux) platform version with ECS Exec.
MIN_FARGATE_VERSION = (1, 4, 0)
_AGENT = "ExecuteCommandAgent"
_PREFERENCES_DOCUMENT = "SSM-SessionManagerRunShell"
_LOCAL_HOSTS = {"localhost", "::1", "0.0.0.0"}


def doctor_hint(cluster: str | None = None, task: str | None = None,
                container: str | None = None, target: str | None = None, *,
                profile: str | None = None, region: str | None = None) -> str:
    """The ``ssmshell doctor …`` command line that checks this target.

    Example: ``doctor_hint("prod", "3f2a…", "app")`` →
    ``ssmshell doctor --cluster prod --task 3f2a… --container app``.
    """
    words = ["ssmshell", "doctor"]
    for option, value in (("--cluster", cluster), ("--task", task),
                          ("--container", container)):
        if value:
            words += [option, value]
    for option, value in (("--profile", profile), ("--region", region)):
        if value:
            words += [option, value]
    if target and not (cluster or task):
        words.append(target)
    return shlex.join(words)


@dataclass(frozen=True)
class Check:
    """One result: ``status`` is ok, fail, skip or warn; ``fix`` says what to do."""

    status: str
    title: str
    detail: str = ""
    fix: str = ""


class CallFailed(Exception):
    """An AWS call failed: ``code`` is the AWS error code ("" if none), ``error`` the
    translated one-line error."""

    def __init__(self, code: str, error: UserError) -> None:
        super().__init__(error.message)
        self.code = code
        self.error = error


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _segment(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def _is_local(url: str) -> bool:
    """Whether ``url`` points at this machine (the local Session Manager, a test server)."""
    try:
        host = (urlparse(url).hostname or "").lower()
    except ValueError:
        return False
    return host in _LOCAL_HOSTS or host.startswith("127.")


class Doctor:
    """Runs the checks against ``aws`` (an :class:`~ssmshell.aws.api.Aws`), calling
    ``report`` with each :class:`Check` as soon as it is known."""

    def __init__(self, aws: Any, report: Callable[[Check], None] | None = None) -> None:
        self.aws = aws
        self.report = report or (lambda check: None)
        self.checks: list[Check] = []

    @property
    def failed(self) -> bool:
        """Whether any check failed."""
        return any(c.status == FAIL for c in self.checks)

    def add(self, status: str, title: str, detail: str = "", fix: str = "") -> Check:
        check = Check(status, title, detail, fix)
        self.checks.append(check)
        self.report(check)
        return check

    def _options(self) -> str:
        """``--profile``/``--region`` to repeat in suggested commands."""
        words = []
        if self.aws.profile:
            words += ["--profile", self.aws.profile]
        if getattr(self.aws, "_region", None):
            words += ["--region", self.aws._region]
        return (" " + shlex.join(words)) if words else ""

    def call(self, service: str, operation: str, action: str, **params: Any) -> Any:
        """One AWS call; failures become :class:`CallFailed`."""
        from ssmshell.aws.errors import translate

        try:
            return getattr(self.aws.client(service), operation)(**params)
        except UserError as exc:
            raise CallFailed("", exc) from None
        except Exception as exc:
            response = getattr(exc, "response", None)
            code = str((response or {}).get("Error", {}).get("Code", "")) \
                if isinstance(response, dict) else ""
            raise CallFailed(code, translate(exc, action, self.aws.profile)) from None

    def _call_fix(self, exc: CallFailed, action: str) -> str:
        code = exc.error.exit_code
        if code == Exit.ACCESS_DENIED:
            return f"allow {action} to your IAM identity"
        if code in (Exit.NO_CREDENTIALS, Exit.SSO_EXPIRED):
            return "refresh the credentials (aws sso login / aws configure)"
        if code == Exit.UNREACHABLE:
            return "check the network, proxy, --endpoint-url and region"
        return ""

    # ------------------------------------------------------------------ basics

    def check_basics(self) -> bool:
        """Credentials, region, caller identity; False when nothing else can work."""
        from ssmshell.aws.errors import translate

        profile = self.aws.profile
        where = f" (profile {profile})" if profile else ""
        login = f"aws sso login --profile {profile}" if profile else "aws sso login"
        try:
            credentials = self.aws.session.get_credentials()
            frozen = credentials.get_frozen_credentials() if credentials else None
        except UserError as exc:
            self.add(FAIL, "credentials", exc.message,
                     "check the profile name (aws configure list-profiles)")
            return False
        except Exception as exc:
            error = translate(exc, "credentials", profile)
            fix = login if error.exit_code == Exit.SSO_EXPIRED else \
                "fix the profile's configuration in ~/.aws/config"
            self.add(FAIL, "credentials", error.message, fix)
            return False
        if frozen is None or not frozen.access_key:
            self.add(FAIL, "credentials", "none found" + where,
                     f"run 'aws configure' or '{login}', or set AWS_PROFILE "
                     "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
            return False
        self.add(OK, "credentials", f"from {credentials.method}{where}")

        try:
            region = self.aws.region
        except UserError:
            self.add(FAIL, "region", "none configured",
                     "pass --region, set AWS_REGION, put region in ~/.aws/config, or set "
                     "[defaults] region in the ssmshell config")
            return False
        self.add(OK, "region", region)

        try:
            identity = self.call("sts", "get_caller_identity", "sts:GetCallerIdentity")
        except CallFailed as exc:
            endpoint = self._endpoint("sts")
            if _is_local(endpoint):
                self.add(SKIP, "caller identity", f"not checked: the local endpoint "
                         f"{endpoint} does not serve STS")
            else:
                fix = self._call_fix(exc, "sts:GetCallerIdentity")
                if exc.error.exit_code == Exit.ACCESS_DENIED:
                    fix = "the credentials are invalid or expired: refresh them"
                self.add(FAIL, "caller identity", exc.error.message, fix)
            return True
        self.add(OK, "caller identity", f"{identity.get('Arn', '?')} (account "
                 f"{identity.get('Account', '?')})")
        return True

    def _endpoint(self, service: str) -> str:
        try:
            return str(self.aws.client(service).meta.endpoint_url)
        except Exception:
            return str(self.aws.endpoint_url or "")

    # ------------------------------------------------------------------ KMS

    def check_kms(self, title: str, key: str, target_id: str, who: str) -> None:
        """kms:GenerateDataKey with ``key`` and a session-like encryption context."""
        context = {"aws:ssm:SessionId": "ssmshell-doctor", "aws:ssm:TargetId": target_id}
        try:
            self.call("kms", "generate_data_key", "kms:GenerateDataKey", KeyId=key,
                      NumberOfBytes=64, EncryptionContext=context)
        except CallFailed as exc:
            self.add(FAIL, title, f"{key}: {exc.error.message}",
                     f"allow kms:GenerateDataKey on {key} to your IAM identity (the key "
                     f"policy too), and kms:Decrypt to {who}")
            return
        self.add(OK, title, f"{key}: kms:GenerateDataKey allowed")

    # ------------------------------------------------------------------ ECS

    def check_ecs(self, cluster: str | None, task: str | None,
                  container: str | None) -> None:
        """The ECS Exec checks for ``task`` (id or ARN) in ``cluster`` (name or ARN)."""
        options = self._options()
        if cluster is None and task and task.startswith("arn:") and task.count("/") == 2:
            cluster = task.split("/")[1]
        if cluster is None:
            try:
                listed = self.call("ecs", "list_clusters", "ecs:ListClusters")
            except CallFailed as exc:
                self.add(FAIL, "cluster", exc.error.message,
                         self._call_fix(exc, "ecs:ListClusters"))
                return
            arns = listed.get("clusterArns") or []
            if len(arns) != 1:
                self.add(FAIL, "cluster", "no --cluster given" + (
                    "" if arns else " and there are no clusters in this region"),
                    f"give --cluster (see: ssmshell ls clusters{options})")
                return
            cluster = str(arns[0])
        name = _segment(cluster)
        try:
            out = self.call("ecs", "describe_clusters", "ecs:DescribeClusters",
                            clusters=[cluster], include=["CONFIGURATIONS"])
        except CallFailed as exc:
            self.add(FAIL, f"cluster {name}", exc.error.message,
                     self._call_fix(exc, "ecs:DescribeClusters"))
            return
        found = [c for c in out.get("clusters") or [] if c.get("status", "ACTIVE") != "INACTIVE"]
        if not found:
            self.add(FAIL, f"cluster {name}", f"not found in {self.aws.region}",
                     f"check the name and region: ssmshell ls clusters{options}")
            return
        info = found[0]
        self.add(OK, f"cluster {name}", str(info.get("status") or "ACTIVE"))
        exec_config = ((info.get("configuration") or {})
                       .get("executeCommandConfiguration") or {})
        kms_key = str(exec_config.get("kmsKeyId") or "")
        if not task:
            self._check_cluster_kms(name, kms_key, f"ecs:{name}")
            return

        task_id = _segment(task)
        try:
            described = self.call("ecs", "describe_tasks", "ecs:DescribeTasks",
                                  cluster=cluster, tasks=[task])
        except CallFailed as exc:
            self.add(FAIL, f"task {task_id}", exc.error.message,
                     self._call_fix(exc, "ecs:DescribeTasks"))
            return
        tasks = described.get("tasks") or []
        if not tasks:
            self.add(FAIL, f"task {task_id}", f"not found in cluster {name}",
                     f"list the running tasks: ssmshell ls tasks --cluster {name}{options}")
            return
        desc = tasks[0]
        group = str(desc.get("group") or "")
        status = str(desc.get("lastStatus") or "?")
        if status == "RUNNING":
            self.add(OK, f"task {task_id}", f"RUNNING ({group})" if group else "RUNNING")
        else:
            self.add(FAIL, f"task {task_id}", f"{status} (desired "
                     f"{desc.get('desiredStatus', '?')}): ECS Exec needs a RUNNING task",
                     f"pick a running task: ssmshell ls tasks --cluster {name}{options}")

        exec_on = desc.get("enableExecuteCommand") is True
        if exec_on:
            self.add(OK, "enableExecuteCommand", "on")
        else:
            if group.startswith("service:"):
                service = group.split(":", 1)[1]
                fix = (f"aws ecs update-service --cluster {name} --service {service} "
                       "--enable-execute-command --force-new-deployment (new tasks get it)")
            else:
                fix = ("start the task again with --enable-execute-command (aws ecs run-task "
                       "… --enable-execute-command): it cannot be turned on in a running task")
            self.add(FAIL, "enableExecuteCommand", "off for this task", fix)

        self._check_platform(desc, name)

        containers = list(desc.get("containers") or [])
        names = [str(c.get("name")) for c in containers]
        if container is not None:
            if container not in names:
                self.add(FAIL, f"container {container}", f"not in task {task_id} (it has: "
                         f"{', '.join(names) or 'none'})",
                         f"use --container {names[0]}" if names else "")
                containers = []
            else:
                containers = [c for c in containers if c.get("name") == container]
        target_ids = []
        for item in containers:
            self._check_container(item, exec_on)
            if item.get("runtimeId"):
                target_ids.append(f"ecs:{name}_{task_id}_{item['runtimeId']}")

        self._check_task_definition(desc, [str(c.get("name")) for c in containers])
        self._check_cluster_kms(name, kms_key, target_ids[0] if target_ids else f"ecs:{name}")

    def _check_cluster_kms(self, name: str, kms_key: str, target_id: str) -> None:
        if kms_key:
            self.check_kms("ECS Exec KMS key", kms_key, target_id, "the task role")
        else:
            self.add(OK, "ECS Exec KMS key", f"none on cluster {name} (sessions are not "
                     "KMS-encrypted)")

    def _check_platform(self, desc: dict[str, Any], cluster: str) -> None:
        launch = str(desc.get("launchType") or "")
        if not launch and str(desc.get("capacityProviderName") or "").startswith("FARGATE"):
            launch = "FARGATE"
        family = str(desc.get("platformFamily") or "")
        version = str(desc.get("platformVersion") or "")
        if launch != "FARGATE":
            self.add(SKIP, "platform version", f"{launch or 'EC2'} launch type: the ECS "
                     "agent on the container instance must be 1.50.2 or later (not checked)")
        elif family.lower().startswith("windows") or version in ("", "LATEST"):
            self.add(OK, "platform version", f"Fargate {version or 'LATEST'}"
                     + (f" ({family})" if family else ""))
        elif _version(version) >= MIN_FARGATE_VERSION:
            self.add(OK, "platform version", f"Fargate {version}")
        else:
            service = str(desc.get("group") or "")
            how = (f"aws ecs update-service --cluster {cluster} --service "
                   f"{service.split(':', 1)[1]} --platform-version LATEST "
                   "--force-new-deployment") if service.startswith("service:") else \
                "run the task with --platform-version LATEST"
            self.add(FAIL, "platform version", f"Fargate {version}: ECS Exec needs 1.4.0 "
                     "or later", how)

    def _check_container(self, item: dict[str, Any], exec_on: bool) -> None:
        name = str(item.get("name"))
        status = str(item.get("lastStatus") or "?")
        if status != "RUNNING" or not item.get("runtimeId"):
            self.add(FAIL, f"container {name}", f"{status}" + (
                "" if item.get("runtimeId") else " (no runtime id: not started)"),
                "wait until it runs, or check why it stopped (aws ecs describe-tasks)")
        if not exec_on:
            return
        agent = next((a for a in item.get("managedAgents") or []
                      if a.get("name") == _AGENT), None)
        title = f"{_AGENT} in {name}"
        region = self.aws.region
        fix = ("the task role needs ssmmessages:CreateControlChannel, CreateDataChannel, "
               "OpenControlChannel and OpenDataChannel, and the task must reach "
               f"ssmmessages.{region}.amazonaws.com (NAT gateway or VPC endpoint); "
               "then start a new task")
        if agent is None:
            self.add(FAIL, title, "not reported by ECS", fix)
        elif agent.get("lastStatus") == "RUNNING":
            self.add(OK, title, "RUNNING")
        else:
            reason = f" ({agent['reason']})" if agent.get("reason") else ""
            self.add(FAIL, title, f"{agent.get('lastStatus') or 'not running'}{reason}", fix)

    def _check_task_definition(self, desc: dict[str, Any], names: list[str]) -> None:
        arn = str(desc.get("taskDefinitionArn") or "")
        if not arn:
            self.add(SKIP, "task definition", "not checked: the task names none")
            return
        try:
            out = self.call("ecs", "describe_task_definition", "ecs:DescribeTaskDefinition",
                            taskDefinition=arn)
        except CallFailed as exc:
            reason = "the endpoint does not serve it" if exc.code in (
                "UnknownOperationException", "InvalidAction") else exc.error.message
            self.add(SKIP, f"task definition {_segment(arn)}", f"not checked: {reason}")
            return
        definition = out.get("taskDefinition") or {}
        windows = str(desc.get("platformFamily") or "").lower().startswith("windows")
        defs = {str(d.get("name")): d for d in definition.get("containerDefinitions") or []}
        for name in names:
            spec = defs.get(name)
            if spec is None:
                continue
            if spec.get("readonlyRootFilesystem"):
                self.add(FAIL, f"readonlyRootFilesystem of {name}", "on: the ECS Exec agent "
                         "needs to write in the container",
                         "set readonlyRootFilesystem to false in the task definition and "
                         "redeploy")
            else:
                self.add(OK, f"readonlyRootFilesystem of {name}", "off")
            if windows:
                continue
            if (spec.get("linuxParameters") or {}).get("initProcessEnabled"):
                self.add(OK, f"initProcessEnabled of {name}", "on")
            else:
                self.add(WARN, f"initProcessEnabled of {name}", "off: processes left by "
                         "ECS Exec sessions are not reaped",
                         "set linuxParameters.initProcessEnabled to true in the task "
                         "definition")

    # ------------------------------------------------------------------ instances

    def check_instance(self, target: str) -> None:
        """The Session Manager checks for an instance id, Name tag, IP or DNS name."""
        from ssmshell.aws.targets import non_interactive_chooser, resolve_instance

        options = self._options()
        try:
            instance_id = resolve_instance(self.aws, target,
                                           non_interactive_chooser("an instance id"))
        except UserError as exc:
            self.add(FAIL, f"target {target}", exc.message,
                     f"list the managed nodes: ssmshell ls instances{options}")
            return
        self.add(OK, f"target {target}", instance_id if instance_id != target
                 else "an instance id")
        try:
            out = self.call("ssm", "describe_instance_information",
                            "ssm:DescribeInstanceInformation",
                            Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])
        except CallFailed as exc:
            self.add(FAIL, "SSM registration", exc.error.message,
                     self._call_fix(exc, "ssm:DescribeInstanceInformation"))
            return
        infos = out.get("InstanceInformationList") or []
        if not infos:
            self.add(FAIL, "SSM registration", f"{instance_id} is not a managed node (its "
                     "SSM agent never registered)",
                     "give the instance a role with AmazonSSMManagedInstanceCore, run the "
                     "SSM agent, and let it reach the ssm, ssmmessages and ec2messages "
                     "endpoints (HTTPS)")
            return
        info = infos[0]
        self.add(OK, "SSM registration", f"{info.get('ResourceType') or 'managed node'}")
        ping = str(info.get("PingStatus") or "?")
        if ping == "Online":
            self.add(OK, "SSM agent", "Online")
        else:
            last = info.get("LastPingDateTime")
            when = f", last ping {last:%Y-%m-%d %H:%M:%S %Z}".rstrip() if hasattr(
                last, "strftime") else ""
            self.add(FAIL, "SSM agent", f"{ping}{when}",
                     "start the instance or the agent (sudo systemctl restart "
                     "amazon-ssm-agent), and check its role and its HTTPS access to "
                     f"ssm.{self.aws.region}.amazonaws.com")
        version = str(info.get("AgentVersion") or "")
        update = ("aws ssm send-command --document-name AWS-UpdateSSMAgent "
                  f"--targets Key=InstanceIds,Values={instance_id}{options}")
        if not version:
            self.add(SKIP, "SSM agent version", "not reported")
        elif _version(version) < MIN_AGENT_VERSION:
            self.add(FAIL, "SSM agent version", f"{version}: Session Manager needs "
                     f"{'.'.join(map(str, MIN_AGENT_VERSION))} or later", update)
        elif info.get("IsLatestVersion") is False:
            self.add(WARN, "SSM agent version", f"{version} (a newer one exists)", update)
        else:
            self.add(OK, "SSM agent version", version)
        platform = ", ".join(str(p) for p in (
            info.get("PlatformType"), " ".join(str(x) for x in (
                info.get("PlatformName"), info.get("PlatformVersion")) if x)) if p)
        self.add(OK, "platform", platform or "?")
        self._check_session_kms(instance_id)

    def _check_session_kms(self, instance_id: str) -> None:
        try:
            doc = self.call("ssm", "get_document", "ssm:GetDocument",
                            Name=_PREFERENCES_DOCUMENT)
        except CallFailed as exc:
            if exc.code in ("InvalidDocument", "DoesNotExistException"):
                self.add(OK, "session KMS key", "no Session Manager preferences (sessions "
                         "are not KMS-encrypted)")
            else:
                self.add(SKIP, "session KMS key", f"not checked: {exc.error.message}")
            return
        try:
            content = json.loads(doc.get("Content") or "{}")
            key = str((content.get("inputs") or {}).get("kmsKeyId") or "")
        except (ValueError, AttributeError):
            self.add(SKIP, "session KMS key", f"not checked: {_PREFERENCES_DOCUMENT} is not "
                     "JSON")
            return
        if key:
            self.check_kms("session KMS key", key, instance_id, "the instance role")
        else:
            self.add(OK, "session KMS key", "none in the Session Manager preferences "
                     "(sessions are not KMS-encrypted)")


# ------------------------------------------------------------------------- the command


def _marks() -> dict[str, str]:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "".join(_MARKS.values()).encode(encoding)
    except (LookupError, UnicodeEncodeError):
        return _ASCII_MARKS
    return _MARKS


def _printer() -> Callable[[Check], None]:
    marks = _marks()

    def show(check: Check) -> None:
        mark = click.style(marks[check.status], fg=_COLORS[check.status], bold=True)
        click.echo(f"{mark} {check.title}: {check.detail}" if check.detail
                   else f"{mark} {check.title}")
        if check.fix and check.status in (FAIL, WARN):
            click.echo(f"    fix: {check.fix}")

    return show


@click.command("doctor")
@click.argument("target", required=False, shell_complete=complete_instances)
@click.option("--cluster", metavar="CLUSTER", shell_complete=complete_clusters,
              help="ECS cluster name or ARN.")
@click.option("--task", metavar="TASK", shell_complete=complete_tasks,
              help="ECS task id or ARN.")
@click.option("--container", metavar="NAME", shell_complete=complete_containers,
              help="Only this container of the task.")
@aws_options
@handle_errors
def doctor_cmd(target: str | None, cluster: str | None, task: str | None,
               container: str | None, profile: str | None, region: str | None,
               endpoint_url: str | None) -> None:
    """Check what a session to TARGET (an instance) or to --cluster/--task needs.

    Prints ✓ for each check passed, ✗ and a fix for each failed one (– = skipped,
    ! = a warning); exits 0 only when nothing failed. Without a target it checks
    the credentials and the region.
    """
    if target and (cluster or task or container):
        raise UserError("give TARGET (an instance) or --cluster/--task, not both", Exit.USAGE)
    if container and not task:
        raise UserError("--container needs --task", Exit.USAGE)
    doctor = Doctor(make_aws(profile, region, endpoint_url), _printer())
    if doctor.check_basics():
        if target:
            doctor.check_instance(target)
        elif cluster or task:
            doctor.check_ecs(cluster, task, container)
    failures = sum(c.status == FAIL for c in doctor.checks)
    if failures:
        click.echo(f"{failures} problem{'s' if failures > 1 else ''} found")
        sys.exit(Exit.ERROR)
    click.echo("no problems found")
