"""Target resolution: ECS cluster/task/container and instances (§2.3)."""

from __future__ import annotations

from dataclasses import dataclass

from ssmshell.aws.api import Aws
from ssmshell.errors import Exit, UserError


@dataclass(frozen=True)
class EcsTarget:
    """A resolved ECS Exec target."""

    cluster_arn: str
    task_arn: str
    container_name: str
    runtime_id: str

    @property
    def cluster_name(self) -> str:
        return self.cluster_arn.rsplit("/", 1)[-1]

    @property
    def task_id(self) -> str:
        return self.task_arn.rsplit("/", 1)[-1]

    @property
    def target_id(self) -> str:
        """``ecs:<clusterName>_<taskId>_<runtimeId>`` exactly as the agent builds it (§2.3)."""
        return f"ecs:{self.cluster_name}_{self.task_id}_{self.runtime_id}"


def last_segment(name_or_arn: str) -> str:
    """``arn:…:cluster/prod`` → ``prod``; ``task/<cluster>/<id>`` → ``<id>``; names pass."""
    return name_or_arn.rsplit("/", 1)[-1]


def resolve_ecs(aws: Aws, cluster: str, task: str, container: str | None) -> EcsTarget:
    """Describe the task and pick its container.

    Raises:
        UserError: task not found, not running, container ambiguous or unknown,
            exec not enabled, or the ExecuteCommandAgent not running.
    """
    out = aws.call("ecs", "describe_tasks", "ecs:DescribeTasks", cluster=cluster,
                   tasks=[task])
    tasks = out.get("tasks") or []
    if not tasks:
        raise UserError(f"task not found: {last_segment(task)} in cluster "
                        f"{last_segment(cluster)}", Exit.TARGET_NOT_FOUND)
    desc = tasks[0]
    containers = desc.get("containers") or []
    if container is None:
        if len(containers) != 1:
            names = ", ".join(c.get("name", "?") for c in containers)
            raise UserError(f"the task has several containers ({names}): choose one with "
                            "--container", Exit.AMBIGUOUS_TARGET)
        chosen = containers[0]
    else:
        matches = [c for c in containers if c.get("name") == container]
        if not matches:
            names = ", ".join(c.get("name", "?") for c in containers)
            raise UserError(f"container {container!r} not found in the task (it has: {names})",
                            Exit.TARGET_NOT_FOUND)
        chosen = matches[0]
    if desc.get("enableExecuteCommand") is False:
        raise UserError("ECS Exec is not enabled on this task: run it with "
                        "--enable-execute-command", Exit.EXEC_NOT_ENABLED)
    agents = [a for a in chosen.get("managedAgents") or []
              if a.get("name") == "ExecuteCommandAgent"]
    if agents and agents[0].get("lastStatus") != "RUNNING":
        raise UserError(f"the ECS Exec agent in container {chosen.get('name')} is "
                        f"{agents[0].get('lastStatus', 'not running')}", Exit.EXEC_NOT_ENABLED)
    runtime_id = chosen.get("runtimeId")
    if not runtime_id:
        raise UserError(f"container {chosen.get('name')} has no runtime id yet (not started)",
                        Exit.TARGET_NOT_CONNECTED)
    return EcsTarget(desc["clusterArn"], desc["taskArn"], chosen["name"], runtime_id)
