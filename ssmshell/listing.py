"""``ssmshell ls instances|clusters|services|tasks``: what can be connected to.

Tables for people (columns separated by two spaces or more), ``--json`` for programs.
The look-ups are :mod:`ssmshell.aws.targets`' (the same ones the resolvers and shell
completion use).
"""

from __future__ import annotations

import json
from typing import Any

import click

from ssmshell.cliopts import aws_options, handle_errors, make_aws
from ssmshell.completion import complete_clusters, complete_services
from ssmshell.errors import Exit, UserError

KINDS = ("instances", "clusters", "services", "tasks")


def instance_rows(aws: Any) -> list[dict[str, str]]:
    """Every managed node: instance_id, name (EC2 Name tag or node name), ip, platform,
    ping_status."""
    from ssmshell.aws import targets

    infos = targets._managed_nodes(aws)
    names = targets._ec2_names(aws, [i["InstanceId"] for i in infos])
    nodes = sorted((targets._ssm_node(i, names.get(i["InstanceId"], "")) for i in infos),
                   key=targets._Node.sort_key)
    return [{"instance_id": n.instance_id, "name": n.name, "ip": n.ip,
             "platform": n.platform, "ping_status": n.ping} for n in nodes]


def cluster_rows(aws: Any) -> list[dict[str, str]]:
    """Every cluster: name, arn."""
    from ssmshell.aws.targets import list_clusters

    return [{"name": c.label, "arn": c.value} for c in list_clusters(aws)]


def service_rows(aws: Any, clusters: list[str]) -> list[dict[str, str]]:
    """Services of ``clusters``: cluster, name, arn."""
    from ssmshell.aws.targets import last_segment, list_services

    return [{"cluster": last_segment(cluster), "name": c.label, "arn": c.value}
            for cluster in clusters for c in list_services(aws, cluster)]


def task_rows(aws: Any, clusters: list[str], service: str | None) -> list[dict[str, Any]]:
    """Running tasks of ``clusters`` (of ``service`` if given): task_id, cluster, group,
    task_definition, status, exec (enabled/disabled), containers, arn."""
    from ssmshell.aws.targets import _running_tasks, last_segment

    rows: list[dict[str, Any]] = []
    for cluster in clusters:
        for task in _running_tasks(aws, cluster, service):
            rows.append({
                "task_id": last_segment(task["taskArn"]),
                "cluster": last_segment(str(task.get("clusterArn") or cluster)),
                "group": str(task.get("group") or ""),
                "task_definition": last_segment(str(task.get("taskDefinitionArn") or "")),
                "status": str(task.get("lastStatus") or ""),
                "exec": "disabled" if task.get("enableExecuteCommand") is False
                        else "enabled",
                "containers": [str(c.get("name")) for c in task.get("containers") or []],
                "arn": task["taskArn"],
            })
    return rows


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """``rows`` as an aligned text table with a header; ``columns`` = (key, title)."""

    def cell(value: Any) -> str:
        return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)

    table = [[title for _, title in columns]]
    table += [[cell(row.get(key, "")) or "-" for key, _ in columns] for row in rows]
    widths = [max(len(line[n]) for line in table) for n in range(len(columns))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True))
             for line in table]
    return "\n".join(line.rstrip() for line in lines)


_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "instances": [("instance_id", "INSTANCE"), ("name", "NAME"), ("ip", "IP"),
                  ("platform", "PLATFORM"), ("ping_status", "PING")],
    "clusters": [("name", "CLUSTER"), ("arn", "ARN")],
    "services": [("cluster", "CLUSTER"), ("name", "SERVICE")],
    "tasks": [("task_id", "TASK"), ("cluster", "CLUSTER"), ("group", "GROUP"),
              ("task_definition", "DEFINITION"), ("status", "STATUS"), ("exec", "EXEC"),
              ("containers", "CONTAINERS")],
}


@click.command("ls")
@click.argument("kind", type=click.Choice(KINDS))
@click.option("--cluster", metavar="CLUSTER", shell_complete=complete_clusters,
              help="Cluster for services/tasks (default: every cluster).")
@click.option("--service", metavar="SERVICE", shell_complete=complete_services,
              help="Only the tasks of this service (needs --cluster).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@aws_options
@handle_errors
def ls_cmd(kind: str, cluster: str | None, service: str | None, as_json: bool,
           profile: str | None, region: str | None, endpoint_url: str | None) -> None:
    """List instances (managed nodes), ECS clusters, services or running tasks."""
    if service and kind != "tasks":
        raise UserError("--service only goes with 'ls tasks'", Exit.USAGE)
    if service and not cluster:
        raise UserError("--service needs --cluster", Exit.USAGE)
    if cluster and kind not in ("services", "tasks"):
        raise UserError(f"--cluster does not go with 'ls {kind}'", Exit.USAGE)
    aws = make_aws(profile, region, endpoint_url)
    rows: list[dict[str, Any]]
    if kind == "instances":
        rows = instance_rows(aws)
    elif kind == "clusters":
        rows = cluster_rows(aws)
    else:
        clusters = [cluster] if cluster else [row["arn"] for row in cluster_rows(aws)]
        rows = service_rows(aws, clusters) if kind == "services" \
            else task_rows(aws, clusters, service)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        click.echo(format_table(rows, _COLUMNS[kind]))
    else:
        where = f" in cluster {cluster}" if cluster else ""
        click.echo(f"ssmshell: no {kind if kind != 'tasks' else 'running tasks'}{where} "
                   f"in {aws.region}", err=True)
