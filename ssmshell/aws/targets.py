"""Target resolution: EC2 instances / managed nodes and ECS cluster/task/container (§2.3).

The resolvers turn what the user typed (an instance id, a Name tag, an address, a cluster
name, a task id, nothing at all …) into the exact target StartSession / ExecuteCommand
need. When several things fit they ask an injected :data:`Chooser`; this module never
imports click or prompt_toolkit (the interactive picker lives in :mod:`ssmshell.picker`,
the non-interactive one, :func:`non_interactive_chooser`, fails with the candidates).

The ``list_*`` functions are the same look-ups the resolvers use, exposed for shell
completion; each returns :class:`Candidate` s.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ssmshell.aws.api import Aws
from ssmshell.errors import Exit, UserError

# ------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidate:
    """One thing a user can choose.

    Attributes:
        value: what the resolver uses (instance id, cluster ARN, task ARN, container name).
        label: what the user reads first (instance id, cluster name, task id, container).
        detail: the rest, fields separated by two spaces (``web-1  10.0.0.11  Linux  Online``).
    """

    value: str
    label: str
    detail: str = ""


#: ``(title, candidates) -> the chosen candidate``; called only with two or more
#: candidates. The title reads both as a picker header and as the start of an error
#: ("several instances match 'web'", "no --cluster given; clusters").
Chooser = Callable[[str, list[Candidate]], Candidate]

#: How many candidates a non-interactive error message lists.
MAX_LISTED = 10


def non_interactive_chooser(kind: str) -> Chooser:
    """A chooser for when there is no terminal: it fails, listing the candidates.

    Args:
        kind: what the user should give instead, e.g. ``"instance id"``; appended as
            "; give an instance id" unless the title already names an option (``--…``).

    Returns:
        A :data:`Chooser` that always raises.

    Raises:
        UserError: (from the chooser) with :attr:`Exit.AMBIGUOUS_TARGET`, e.g.
            ``several instances match 'web': i-1(web-1), i-2(web-2); give an instance id``.
    """

    def choose(title: str, candidates: list[Candidate]) -> Candidate:
        shown = ", ".join(_short(c) for c in candidates[:MAX_LISTED])
        if len(candidates) > MAX_LISTED:
            shown += f", … ({len(candidates) - MAX_LISTED} more)"
        message = f"{title}: {shown}"
        if kind and "--" not in title:
            article = "an" if kind[:1].lower() in "aeiou" else "a"
            message += f"; give {article} {kind}"
        raise UserError(message, Exit.AMBIGUOUS_TARGET)

    return choose


def _short(candidate: Candidate) -> str:
    first = candidate.detail.split("  ", 1)[0].strip()
    return f"{candidate.label}({first})" if first else candidate.label


def _choose(choose: Chooser | None, title: str, candidates: list[Candidate]) -> Candidate:
    """The only candidate, or the one ``choose`` picks (which must be one of them)."""
    if len(candidates) == 1:
        return candidates[0]
    chosen = (choose or non_interactive_chooser(""))(title, candidates)
    if chosen not in candidates:
        raise UserError(f"{title}: the choice {chosen.label!r} is not a candidate",
                        Exit.ERROR)
    return chosen


def _pages(aws: Aws, service: str, operation: str, action: str, token: str,
           **params: Any) -> Iterator[dict[str, Any]]:
    """Every page of a paginated call; ``token`` names the request and response key."""
    seen: set[str] = set()
    while True:
        page = aws.call(service, operation, action, **params)
        yield page
        next_token = page.get(token)
        if not next_token or next_token in seen:  # a repeated token would loop forever
            return
        seen.add(next_token)
        params[token] = next_token


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def last_segment(name_or_arn: str) -> str:
    """``arn:…:cluster/prod`` → ``prod``; ``task/<cluster>/<id>`` → ``<id>``; names pass."""
    return name_or_arn.rsplit("/", 1)[-1]


# -------------------------------------------------------------------------- instances

#: StartSession targets (§2.1): EC2 ``i-`` + 8 or 17 hex, managed node ``mi-`` + 17 hex.
_INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})|mi-[0-9a-f]{17}")
#: EC2 states an instance can be connected in (or is about to be).
_LIVE_STATES = ["running", "pending"]
#: Filter limits: DescribeInstances filter values, DescribeInstanceInformation ids.
_EC2_FILTER_VALUES = 200
_SSM_IDS = 50


@dataclass
class _Node:
    """What is shown of an instance, merged from EC2 and SSM."""

    instance_id: str
    name: str = ""
    ip: str = ""
    platform: str = ""
    ping: str = ""

    def candidate(self) -> Candidate:
        detail = "  ".join(f for f in (self.name, self.ip, self.platform, self.ping) if f)
        return Candidate(self.instance_id, self.instance_id, detail)

    def sort_key(self) -> tuple[bool, str, str]:
        return (not self.name, self.name.lower(), self.instance_id)


def _name_tag(instance: dict[str, Any]) -> str:
    for tag in instance.get("Tags") or []:
        if tag.get("Key") == "Name":
            return str(tag.get("Value") or "")
    return ""


def _ec2_node(instance: dict[str, Any]) -> _Node:
    platform = ("Windows" if instance.get("Platform") == "windows"
                else str(instance.get("PlatformDetails") or ""))
    return _Node(instance["InstanceId"], _name_tag(instance),
                 str(instance.get("PrivateIpAddress") or instance.get("PublicIpAddress") or ""),
                 platform)


def _ec2_instances(aws: Aws, filters: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for page in _pages(aws, "ec2", "describe_instances", "ec2:DescribeInstances",
                       "NextToken", Filters=filters):
        for reservation in page.get("Reservations") or []:
            yield from reservation.get("Instances") or []


def _ec2_find(aws: Aws, target: str) -> dict[str, _Node]:
    """Live EC2 instances whose Name tag, IP address or DNS name is ``target``.

    EC2 ANDs different filter names, so each kind of match is its own call.
    """
    try:
        ipaddress.IPv4Address(target)
        names = ["private-ip-address", "ip-address"]
    except ValueError:
        names = ["tag:Name"] + (["private-dns-name", "dns-name"] if "." in target else [])
    found: dict[str, _Node] = {}
    for name in names:
        filters = [{"Name": name, "Values": [target]},
                   {"Name": "instance-state-name", "Values": _LIVE_STATES}]
        for instance in _ec2_instances(aws, filters):
            found.setdefault(instance["InstanceId"], _ec2_node(instance))
    return found


def _ec2_names(aws: Aws, instance_ids: list[str]) -> dict[str, str]:
    """Name tags of EC2 instances, best effort: {} when EC2 cannot be asked."""
    names: dict[str, str] = {}
    ids = [i for i in instance_ids if i.startswith("i-")]
    try:
        for chunk in _chunks(ids, _EC2_FILTER_VALUES):
            # An instance-id *filter* (unlike InstanceIds) ignores ids EC2 does not know.
            for instance in _ec2_instances(aws, [{"Name": "instance-id", "Values": chunk}]):
                names[instance["InstanceId"]] = _name_tag(instance)
    except UserError:
        pass
    return names


def _managed_nodes(aws: Aws, instance_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """ssm:DescribeInstanceInformation, all pages (only ``instance_ids`` if given)."""
    action = "ssm:DescribeInstanceInformation"
    if instance_ids is None:
        return [info for page in _pages(aws, "ssm", "describe_instance_information", action,
                                        "NextToken", MaxResults=50)
                for info in page.get("InstanceInformationList") or []]
    infos: list[dict[str, Any]] = []
    for chunk in _chunks(instance_ids, _SSM_IDS):
        filters = [{"Key": "InstanceIds", "Values": chunk}]
        for page in _pages(aws, "ssm", "describe_instance_information", action,
                           "NextToken", Filters=filters, MaxResults=50):
            infos.extend(page.get("InstanceInformationList") or [])
    return infos


def _ssm_node(info: dict[str, Any], ec2_name: str = "") -> _Node:
    return _Node(info["InstanceId"],
                 ec2_name or str(info.get("Name") or info.get("ComputerName") or ""),
                 str(info.get("IPAddress") or ""), str(info.get("PlatformType") or ""),
                 str(info.get("PingStatus") or ""))


def _ssm_matches(info: dict[str, Any], target: str) -> bool:
    """A managed node is ``target`` by its Name, IPAddress or (short) ComputerName."""
    computer = str(info.get("ComputerName") or "").lower()
    wanted = target.lower()
    return (info.get("Name") == target or info.get("IPAddress") == target
            or (bool(computer) and wanted in (computer, computer.split(".", 1)[0])))


def list_instances(aws: Aws) -> list[Candidate]:
    """Every managed node (ssm:DescribeInstanceInformation) with EC2 Name tags if allowed.

    Raises:
        UserError: the managed nodes cannot be listed.
    """
    infos = _managed_nodes(aws)
    names = _ec2_names(aws, [info["InstanceId"] for info in infos])
    nodes = [_ssm_node(info, names.get(info["InstanceId"], "")) for info in infos]
    return [n.candidate() for n in sorted(nodes, key=_Node.sort_key)]


def resolve_instance(aws: Aws, target: str | None, choose: Chooser | None) -> str:
    """The StartSession target (``i-…`` / ``mi-…``) for what the user typed.

    ``target`` may be an instance id (returned as is, no API call), a Name tag value
    (EC2 wildcards ``*``/``?`` work), a private or public IPv4 address, a private or
    public DNS name, or a managed node's Name / ComputerName / IP address. EC2
    DescribeInstances is asked first (live instances only); the managed-node list is
    scanned only when EC2 finds nothing or cannot be asked, so a caller without EC2
    permissions can still use managed nodes. ``None`` lists every managed node.

    Args:
        aws: the AWS clients.
        target: what the user typed, or None.
        choose: asked when several instances fit (None = fail listing them).

    Returns:
        The instance id.

    Raises:
        UserError: nothing matches (:attr:`Exit.TARGET_NOT_FOUND`), the chooser's error
            (ambiguous / cancelled), or the AWS error when no look-up could be made.
    """
    if target is None:
        candidates = list_instances(aws)
        if not candidates:
            raise UserError(f"no managed instances in {aws.region}", Exit.TARGET_NOT_FOUND)
        return _choose(choose, "no target given; managed instances", candidates).value
    target = target.strip()
    if _INSTANCE_ID.fullmatch(target):
        return target

    ec2_error: UserError | None = None
    ssm_error: UserError | None = None
    nodes: list[_Node] = []
    try:
        found = _ec2_find(aws, target)
    except UserError as exc:
        found, ec2_error = {}, exc
    if found:
        try:  # agent status for the details; EC2 alone is enough to resolve
            infos = {i["InstanceId"]: i for i in _managed_nodes(aws, list(found))}
        except UserError:
            infos = None
        for node in found.values():
            info = (infos or {}).get(node.instance_id)
            if info:
                node.platform = str(info.get("PlatformType") or node.platform)
                node.ping = str(info.get("PingStatus") or "")
            elif infos is not None:
                node.ping = "no SSM agent"
            nodes.append(node)
    else:
        try:
            matches = [i for i in _managed_nodes(aws) if _ssm_matches(i, target)]
        except UserError as exc:
            matches, ssm_error = [], exc
        names = _ec2_names(aws, [i["InstanceId"] for i in matches]) if matches and not \
            ec2_error else {}
        nodes = [_ssm_node(i, names.get(i["InstanceId"], "")) for i in matches]

    if not nodes:
        if ec2_error is not None:
            raise UserError(f"no managed node matches {target!r}, and the EC2 look-up "
                            f"failed: {ec2_error}", ec2_error.exit_code)
        if ssm_error is not None:
            raise UserError(f"no instance matches {target!r} (managed nodes could not be "
                            f"listed: {ssm_error})", Exit.TARGET_NOT_FOUND)
        raise UserError(f"no instance matches {target!r}", Exit.TARGET_NOT_FOUND)
    candidates = [n.candidate() for n in sorted(nodes, key=_Node.sort_key)]
    return _choose(choose, f"several instances match {target!r}", candidates).value


# -------------------------------------------------------------------------------- ECS


@dataclass(frozen=True)
class EcsTarget:
    """A resolved ECS Exec target."""

    cluster_arn: str
    task_arn: str
    container_name: str
    runtime_id: str

    @property
    def cluster_name(self) -> str:
        return last_segment(self.cluster_arn)

    @property
    def task_id(self) -> str:
        return last_segment(self.task_arn)

    @property
    def target_id(self) -> str:
        """``ecs:<clusterName>_<taskId>_<runtimeId>`` exactly as the agent builds it (§2.3)."""
        return f"ecs:{self.cluster_name}_{self.task_id}_{self.runtime_id}"


#: DescribeTasks takes at most 100 tasks per call.
_DESCRIBE_TASKS_MAX = 100
_AGENT = "ExecuteCommandAgent"


def list_clusters(aws: Aws) -> list[Candidate]:
    """ECS clusters (value = ARN, label = name), sorted by name."""
    arns = [arn for page in _pages(aws, "ecs", "list_clusters", "ecs:ListClusters",
                                   "nextToken")
            for arn in page.get("clusterArns") or []]
    return sorted((Candidate(arn, last_segment(arn)) for arn in arns),
                  key=lambda c: c.label)


def list_services(aws: Aws, cluster: str) -> list[Candidate]:
    """Services of ``cluster`` (name or ARN): value = ARN, label = name, sorted."""
    arns = [arn for page in _pages(aws, "ecs", "list_services", "ecs:ListServices",
                                   "nextToken", cluster=cluster)
            for arn in page.get("serviceArns") or []]
    return sorted((Candidate(arn, last_segment(arn)) for arn in arns),
                  key=lambda c: c.label)


def _describe_tasks(aws: Aws, cluster: str, tasks: list[str]) -> list[dict[str, Any]]:
    described: list[dict[str, Any]] = []
    for chunk in _chunks(tasks, _DESCRIBE_TASKS_MAX):
        out = aws.call("ecs", "describe_tasks", "ecs:DescribeTasks", cluster=cluster,
                       tasks=chunk)
        described.extend(out.get("tasks") or [])
    return described


def _running_tasks(aws: Aws, cluster: str, service: str | None) -> list[dict[str, Any]]:
    """Described tasks whose desired status is RUNNING (of ``service`` if given)."""
    params: dict[str, Any] = {"cluster": cluster, "desiredStatus": "RUNNING"}
    if service:
        params["serviceName"] = service
    arns = [arn for page in _pages(aws, "ecs", "list_tasks", "ecs:ListTasks", "nextToken",
                                   **params)
            for arn in page.get("taskArns") or []]
    tasks = _describe_tasks(aws, cluster, arns) if arns else []
    return sorted(tasks, key=lambda t: (str(t.get("group") or ""), last_segment(t["taskArn"])))


def _describe_task(aws: Aws, cluster: str, task: str) -> dict[str, Any]:
    tasks = _describe_tasks(aws, cluster, [task])
    if not tasks:
        raise UserError(f"task not found: {last_segment(task)} in cluster "
                        f"{last_segment(cluster)}", Exit.TARGET_NOT_FOUND)
    return tasks[0]


def _task_candidate(task: dict[str, Any]) -> Candidate:
    fields = [str(task.get("group") or ""),
              last_segment(str(task.get("taskDefinitionArn") or "")),
              str(task.get("lastStatus") or "")]
    if task.get("enableExecuteCommand") is False:
        fields.append("exec disabled")
    return Candidate(task["taskArn"], last_segment(task["taskArn"]),
                     "  ".join(f for f in fields if f))


def _agent(container: dict[str, Any]) -> dict[str, Any] | None:
    for agent in container.get("managedAgents") or []:
        if agent.get("name") == _AGENT:
            return dict(agent)
    return None


def _container_candidates(task: dict[str, Any]) -> list[Candidate]:
    candidates = []
    for container in task.get("containers") or []:
        agent = _agent(container)
        fields = [str(container.get("image") or ""), str(container.get("lastStatus") or ""),
                  f"exec agent {agent.get('lastStatus', '?')}" if agent else "no exec agent"]
        candidates.append(Candidate(container["name"], container["name"],
                                    "  ".join(f for f in fields if f)))
    return candidates


def list_tasks(aws: Aws, cluster: str, service: str | None = None) -> list[Candidate]:
    """Running tasks of ``cluster`` (of ``service`` if given): value = ARN, label = id."""
    return [_task_candidate(t) for t in _running_tasks(aws, cluster, service)]


def list_containers(aws: Aws, cluster: str, task: str) -> list[Candidate]:
    """Containers of ``task`` (id or ARN): value = label = name, in definition order."""
    return _container_candidates(_describe_task(aws, cluster, task))


def resolve_ecs(aws: Aws, cluster: str | None, task: str | None, container: str | None,
                choose: Chooser | None = None, service: str | None = None) -> EcsTarget:
    """Find the ECS Exec target, asking ``choose`` where the user left a choice.

    Args:
        aws: the AWS clients.
        cluster: name or ARN; None = the only cluster, or choose among them (taken from
            the task ARN when that has the ``task/<cluster>/<id>`` form).
        task: id or ARN; None = the only running task (of ``service``), or choose.
        container: name; None = the only container, or choose.
        choose: asked when several candidates fit (None = fail listing them).
        service: restricts the running tasks considered when ``task`` is None.

    Returns:
        The target, whose :attr:`EcsTarget.target_id` is the §2.3 string.

    Raises:
        UserError: nothing found (TARGET_NOT_FOUND); task not RUNNING or container not
            started (TARGET_NOT_CONNECTED); ECS Exec off on the task or its agent not
            RUNNING (EXEC_NOT_ENABLED); the chooser's error; AWS errors.
    """
    if cluster is None and task and task.startswith("arn:") and task.count("/") == 2:
        cluster = task.split("/")[1]
    if cluster is None:
        clusters = list_clusters(aws)
        if not clusters:
            raise UserError(f"no ECS clusters in {aws.region}", Exit.TARGET_NOT_FOUND)
        cluster = _choose(choose, "no --cluster given; clusters", clusters).value
    if task is None:
        where = (f"service {last_segment(service)} of " if service else "") + \
            f"cluster {last_segment(cluster)}"
        tasks = _running_tasks(aws, cluster, service)
        if not tasks:
            raise UserError(f"no running tasks in {where}", Exit.TARGET_NOT_FOUND)
        chosen = _choose(choose, f"no --task given; running tasks in {where}",
                         [_task_candidate(t) for t in tasks])
        desc = next(t for t in tasks if t["taskArn"] == chosen.value)
    else:
        desc = _describe_task(aws, cluster, task)
    return _exec_target(desc, container, choose)


def _exec_target(task: dict[str, Any], container: str | None,
                 choose: Chooser | None) -> EcsTarget:
    """Check the described ``task`` can be exec'd into and pick its container."""
    task_id = last_segment(task["taskArn"])
    status = task.get("lastStatus")
    if status != "RUNNING":
        raise UserError(f"task {task_id} is {status or 'not running'} (desired "
                        f"{task.get('desiredStatus', '?')}): it must be RUNNING",
                        Exit.TARGET_NOT_CONNECTED)
    if task.get("enableExecuteCommand") is False:
        raise UserError(f"ECS Exec is not enabled on task {task_id}: start the task (or "
                        "update its service and redeploy) with --enable-execute-command",
                        Exit.EXEC_NOT_ENABLED)
    containers = {c["name"]: c for c in task.get("containers") or []}
    if not containers:
        raise UserError(f"task {task_id} has no containers", Exit.TARGET_NOT_FOUND)
    if container is None:
        container = _choose(choose, f"no --container given; containers of task {task_id}",
                            _container_candidates(task)).value
    elif container not in containers:
        raise UserError(f"container {container!r} not found in task {task_id} (it has: "
                        f"{', '.join(containers)})", Exit.TARGET_NOT_FOUND)
    chosen = containers[container]
    agent = _agent(chosen)
    if agent is not None and agent.get("lastStatus") != "RUNNING":
        reason = f" ({agent['reason']})" if agent.get("reason") else ""
        raise UserError(f"the ECS Exec agent in container {container} of task {task_id} is "
                        f"{agent.get('lastStatus') or 'not running'}{reason}",
                        Exit.EXEC_NOT_ENABLED)
    runtime_id = chosen.get("runtimeId")
    if not runtime_id:
        raise UserError(f"container {container} of task {task_id} has no runtime id yet "
                        "(not started)", Exit.TARGET_NOT_CONNECTED)
    return EcsTarget(task["clusterArn"], task["taskArn"], container, runtime_id)
