"""Target resolution (ssmshell.aws.targets) against moto, and botocore's Stubber where
moto lacks the API (ssm:DescribeInstanceInformation) or the fields (ECS runtimeId,
managedAgents, enableExecuteCommand)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3.session
import botocore.session
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from ssmshell.aws.api import Aws
from ssmshell.aws.targets import (
    Candidate,
    EcsTarget,
    list_clusters,
    list_containers,
    list_instances,
    list_services,
    list_tasks,
    non_interactive_chooser,
    resolve_ecs,
    resolve_instance,
)
from ssmshell.errors import Exit, UserError

REGION = "us-east-1"
ACCOUNT = "123456789012"
CLUSTER_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/demo"
TASK_ID = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
TASK_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/demo/{TASK_ID}"
TASK_ID_2 = "ffeeddccbbaa99887766554433221100"
RUNTIME = f"{TASK_ID}-1234567890"
HYBRID_ID = "mi-0123456789abcdef0"


@pytest.fixture(scope="module")
def loader() -> Any:
    """One botocore data loader for the module: service models are parsed once."""
    import botocore.loaders

    return botocore.loaders.create_loader()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, loader: Any) -> Iterator[Aws]:
    """An :class:`Aws` on moto with fake credentials and no machine configuration."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_SSM", "AWS_ENDPOINT_URL_ECS"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN",
                 "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # ~1 s per test otherwise
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    with mock_aws():
        aws = Aws(region=REGION)
        core = botocore.session.Session()
        core.register_component("data_loader", loader)
        aws._session = boto3.session.Session(botocore_session=core, region_name=REGION)
        yield aws


class Recorder:
    """A chooser that records what it was offered and picks the ``index``-th."""

    def __init__(self, index: int = 1) -> None:
        self.index = index
        self.calls: list[tuple[str, list[Candidate]]] = []

    def __call__(self, title: str, candidates: list[Candidate]) -> Candidate:
        self.calls.append((title, list(candidates)))
        return candidates[self.index]


def refuse(title: str, candidates: list[Candidate]) -> Candidate:
    raise AssertionError(f"the chooser should not be asked: {title}")


def run_instances(aws: Aws, name: str, count: int = 1) -> list[dict[str, Any]]:
    out = aws.client("ec2").run_instances(ImageId="ami-12345678", MinCount=count, MaxCount=count,
                            TagSpecifications=[{"ResourceType": "instance",
                                                "Tags": [{"Key": "Name", "Value": name}]}])
    return list(out["Instances"])


def node_info(instance_id: str, **extra: Any) -> dict[str, Any]:
    return {"InstanceId": instance_id, "PingStatus": "Online", "PlatformType": "Linux",
            **extra}


# --------------------------------------------------------------------------- instances


@pytest.mark.parametrize("target", ["i-0123abcd", "i-0123456789abcdef0", HYBRID_ID])
def test_instance_id_needs_no_call(aws: Aws, monkeypatch: pytest.MonkeyPatch,
                                   target: str) -> None:
    def no_call(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no API call expected")

    monkeypatch.setattr(aws, "call", no_call)
    assert resolve_instance(aws, target, refuse) == target


def test_instance_by_name_tag(aws: Aws) -> None:
    web = run_instances(aws, "web-1")[0]
    run_instances(aws, "db-1")
    assert resolve_instance(aws, "web-1", refuse) == web["InstanceId"]


def test_instance_by_private_ip_and_dns(aws: Aws) -> None:
    web = run_instances(aws, "web-1")[0]
    run_instances(aws, "db-1")
    assert resolve_instance(aws, web["PrivateIpAddress"], refuse) == web["InstanceId"]
    assert resolve_instance(aws, web["PrivateDnsName"], refuse) == web["InstanceId"]


def test_instance_by_public_ip_and_dns(aws: Aws) -> None:
    web = run_instances(aws, "web-1")[0]
    run_instances(aws, "db-1")
    public = aws.client("ec2").describe_instances(InstanceIds=[web["InstanceId"]])
    instance = public["Reservations"][0]["Instances"][0]
    assert resolve_instance(aws, instance["PublicIpAddress"], refuse) == web["InstanceId"]
    assert resolve_instance(aws, instance["PublicDnsName"], refuse) == web["InstanceId"]


def test_ambiguous_name_asks_the_chooser(aws: Aws) -> None:
    ids = {i["InstanceId"] for i in run_instances(aws, "web", count=2)}
    run_instances(aws, "db")
    chooser = Recorder(index=1)
    chosen = resolve_instance(aws, "web", chooser)
    [(title, offered)] = chooser.calls
    assert title == "several instances match 'web'"
    assert {c.value for c in offered} == ids
    assert all(c.label == c.value and c.detail.startswith("web") for c in offered)
    assert chosen == offered[1].value


def test_ambiguous_name_without_terminal_lists_both(aws: Aws) -> None:
    ids = sorted(i["InstanceId"] for i in run_instances(aws, "web", count=2))
    with pytest.raises(UserError) as err:
        resolve_instance(aws, "web", non_interactive_chooser("instance id"))
    assert err.value.exit_code == Exit.AMBIGUOUS_TARGET
    message = str(err.value)
    assert message.startswith("several instances match 'web': ")
    assert message.endswith("; give an instance id")
    for instance_id in ids:
        assert f"{instance_id}(web)" in message


def test_ec2_matches_get_the_agent_status(aws: Aws) -> None:
    a, b = (i["InstanceId"] for i in run_instances(aws, "web", count=2))
    with Stubber(aws.client("ssm")) as ssm:
        ssm.add_response("describe_instance_information",
                         {"InstanceInformationList": [node_info(a)]},
                         {"Filters": [{"Key": "InstanceIds", "Values": [a, b]}],
                          "MaxResults": 50})
        chooser = Recorder(index=0)
        resolve_instance(aws, "web", chooser)
        ssm.assert_no_pending_responses()
    details = {c.value: c.detail for c in chooser.calls[0][1]}
    assert details[a].endswith("Linux  Online")
    assert details[b].endswith("no SSM agent")


def test_no_match_is_target_not_found(aws: Aws) -> None:
    run_instances(aws, "web")
    with Stubber(aws.client("ssm")) as ssm:
        ssm.add_response("describe_instance_information",
                         {"InstanceInformationList": [node_info(HYBRID_ID,
                                                                ComputerName="other")]})
        with pytest.raises(UserError) as err:
            resolve_instance(aws, "nope", refuse)
    assert err.value.exit_code == Exit.TARGET_NOT_FOUND
    assert str(err.value) == "no instance matches 'nope'"


def test_no_match_when_managed_nodes_cannot_be_listed(aws: Aws) -> None:
    with Stubber(aws.client("ssm")) as ssm:
        ssm.add_client_error("describe_instance_information", "AccessDeniedException")
        with pytest.raises(UserError) as err:
            resolve_instance(aws, "nope", refuse)
    assert err.value.exit_code == Exit.TARGET_NOT_FOUND
    assert "managed nodes could not be listed" in str(err.value)


@pytest.mark.parametrize("target", ["build-box", "BUILD-BOX.corp.example", "192.168.7.7",
                                    "hybrid-1"])
def test_managed_node_by_computer_name_ip_or_name(aws: Aws, target: str) -> None:
    infos = [node_info(HYBRID_ID, ComputerName="build-box.corp.example",
                       IPAddress="192.168.7.7", Name="hybrid-1", PingStatus="ConnectionLost"),
             node_info("mi-00000000000000001", ComputerName="other", IPAddress="192.168.7.8")]
    with Stubber(aws.client("ssm")) as ssm:
        ssm.add_response("describe_instance_information",
                         {"InstanceInformationList": infos}, {"MaxResults": 50})
        assert resolve_instance(aws, target, refuse) == HYBRID_ID
        ssm.assert_no_pending_responses()


def test_ec2_denied_but_ssm_suffices(aws: Aws) -> None:
    with Stubber(aws.client("ec2")) as ec2, Stubber(aws.client("ssm")) as ssm:
        ec2.add_client_error("describe_instances", "UnauthorizedOperation",
                             "You are not authorized to perform this operation.")
        ssm.add_response("describe_instance_information",
                         {"InstanceInformationList": [node_info(HYBRID_ID,
                                                                ComputerName="web-1")]})
        assert resolve_instance(aws, "web-1", refuse) == HYBRID_ID


def test_ec2_denied_is_surfaced_when_nothing_else_matches(aws: Aws) -> None:
    with Stubber(aws.client("ec2")) as ec2, Stubber(aws.client("ssm")) as ssm:
        ec2.add_client_error("describe_instances", "UnauthorizedOperation",
                             "You are not authorized to perform this operation.")
        ssm.add_response("describe_instance_information", {"InstanceInformationList": []})
        with pytest.raises(UserError) as err:
            resolve_instance(aws, "web-1", refuse)
    assert err.value.exit_code == Exit.ACCESS_DENIED
    assert "ec2:DescribeInstances" in str(err.value)


def test_no_target_lists_managed_nodes_with_ec2_names(aws: Aws) -> None:
    web = run_instances(aws, "web-1")[0]["InstanceId"]
    with Stubber(aws.client("ssm")) as ssm:
        ssm.add_response("describe_instance_information",
                         {"InstanceInformationList": [node_info(web, IPAddress="10.0.0.11")],
                          "NextToken": "page2"}, {"MaxResults": 50})
        ssm.add_response("describe_instance_information",
                         {"InstanceInformationList": [node_info(
                             HYBRID_ID, ComputerName="box", PlatformType="Windows",
                             PingStatus="Inactive")]},
                         {"MaxResults": 50, "NextToken": "page2"})
        chooser = Recorder(index=1)
        assert resolve_instance(aws, None, chooser) == web
        ssm.assert_no_pending_responses()
    [(title, offered)] = chooser.calls
    assert title == "no target given; managed instances"
    assert offered == [Candidate(HYBRID_ID, HYBRID_ID, "box  Windows  Inactive"),
                       Candidate(web, web, "web-1  10.0.0.11  Linux  Online")]


def test_list_instances_empty_and_no_target(aws: Aws) -> None:
    with Stubber(aws.client("ssm")) as ssm:
        ssm.add_response("describe_instance_information", {"InstanceInformationList": []})
        ssm.add_response("describe_instance_information", {"InstanceInformationList": []})
        assert list_instances(aws) == []
        with pytest.raises(UserError) as err:
            resolve_instance(aws, None, refuse)
    assert err.value.exit_code == Exit.TARGET_NOT_FOUND


def test_non_interactive_chooser_truncates() -> None:
    candidates = [Candidate(f"c{i}", f"c{i}") for i in range(12)]
    with pytest.raises(UserError) as err:
        non_interactive_chooser("cluster")("no --cluster given; clusters", candidates)
    assert err.value.exit_code == Exit.AMBIGUOUS_TARGET
    assert str(err.value) == ("no --cluster given; clusters: "
                              + ", ".join(f"c{i}" for i in range(10)) + ", … (2 more)")


# ------------------------------------------------------------------------- ECS, moto


def test_clusters_and_services_from_moto(aws: Aws) -> None:
    ecs = aws.client("ecs")
    ecs.create_cluster(clusterName="zeta")
    ecs.create_cluster(clusterName="demo")
    ecs.register_task_definition(family="app", containerDefinitions=[
        {"name": "web", "image": "nginx", "memory": 128},
        {"name": "side", "image": "busybox", "memory": 128}])
    ecs.create_service(cluster="demo", serviceName="web", taskDefinition="app",
                       desiredCount=1)
    assert [c.label for c in list_clusters(aws)] == ["demo", "zeta"]
    assert list_clusters(aws)[0].value == CLUSTER_ARN
    assert [(c.label, c.value) for c in list_services(aws, "demo")] == [
        ("web", f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/demo/web")]
    assert list_tasks(aws, "demo", "web") == []

    chooser = Recorder(index=0)
    with pytest.raises(UserError) as err:
        resolve_ecs(aws, None, None, None, chooser, service="web")
    assert chooser.calls[0][0] == "no --cluster given; clusters"
    assert [c.label for c in chooser.calls[0][1]] == ["demo", "zeta"]
    assert err.value.exit_code == Exit.TARGET_NOT_FOUND
    assert str(err.value) == "no running tasks in service web of cluster demo"

    with pytest.raises(UserError) as err:
        resolve_ecs(aws, None, None, None, non_interactive_chooser("cluster"))
    assert err.value.exit_code == Exit.AMBIGUOUS_TARGET
    assert str(err.value) == "no --cluster given; clusters: demo, zeta"


def test_single_cluster_is_used_without_asking(aws: Aws) -> None:
    aws.client("ecs").create_cluster(clusterName="demo")
    with pytest.raises(UserError) as err:
        resolve_ecs(aws, None, None, None, refuse)
    assert str(err.value) == "no running tasks in cluster demo"


def test_no_clusters(aws: Aws) -> None:
    with pytest.raises(UserError) as err:
        resolve_ecs(aws, None, None, None, refuse)
    assert err.value.exit_code == Exit.TARGET_NOT_FOUND


# ---------------------------------------------------------------------- ECS, Stubber


def container(name: str, runtime_id: str | None, agent: str | None = "RUNNING",
              image: str = "nginx") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": image, "lastStatus": "RUNNING"}
    if runtime_id:
        out["runtimeId"] = runtime_id
    if agent:
        out["managedAgents"] = [{"name": "ExecuteCommandAgent", "lastStatus": agent}]
    return out


def task(task_id: str = TASK_ID, containers: list[dict[str, Any]] | None = None,
         status: str = "RUNNING", exec_enabled: bool = True,
         group: str = "service:web") -> dict[str, Any]:
    return {"taskArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/demo/{task_id}",
            "clusterArn": CLUSTER_ARN, "lastStatus": status, "desiredStatus": "RUNNING",
            "group": group, "enableExecuteCommand": exec_enabled,
            "taskDefinitionArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/app:3",
            "containers": containers if containers is not None
            else [container("web", RUNTIME)]}


@pytest.fixture
def ecs(aws: Aws) -> Iterator[Stubber]:
    with Stubber(aws.client("ecs")) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def describe(stub: Stubber, cluster: str, tasks: list[str], *described: dict[str, Any]) -> None:
    stub.add_response("describe_tasks", {"tasks": list(described), "failures": []},
                      {"cluster": cluster, "tasks": tasks})


def test_cluster_name_and_task_id(aws: Aws, ecs: Stubber) -> None:
    describe(ecs, "demo", [TASK_ID], task())
    target = resolve_ecs(aws, "demo", TASK_ID, None, refuse)
    assert target == EcsTarget(CLUSTER_ARN, TASK_ARN, "web", RUNTIME)
    assert target.target_id == (
        "ecs:demo_0a1b2c3d4e5f60718293a4b5c6d7e8f9_"
        "0a1b2c3d4e5f60718293a4b5c6d7e8f9-1234567890")


def test_cluster_arn_and_task_arn(aws: Aws, ecs: Stubber) -> None:
    describe(ecs, CLUSTER_ARN, [TASK_ARN], task())
    target = resolve_ecs(aws, CLUSTER_ARN, TASK_ARN, "web", refuse)
    assert target.target_id == f"ecs:demo_{TASK_ID}_{RUNTIME}"


def test_cluster_taken_from_task_arn(aws: Aws, ecs: Stubber) -> None:
    describe(ecs, "demo", [TASK_ARN], task())
    assert resolve_ecs(aws, None, TASK_ARN, None, refuse).cluster_name == "demo"


def test_service_with_one_task_needs_no_choice(aws: Aws, ecs: Stubber) -> None:
    ecs.add_response("list_tasks", {"taskArns": [TASK_ARN]},
                     {"cluster": "demo", "desiredStatus": "RUNNING", "serviceName": "web"})
    describe(ecs, "demo", [TASK_ARN], task())
    target = resolve_ecs(aws, "demo", None, None, refuse, service="web")
    assert target.target_id == f"ecs:demo_{TASK_ID}_{RUNTIME}"


def test_several_tasks_ask_the_chooser(aws: Aws, ecs: Stubber) -> None:
    second_arn = TASK_ARN.replace(TASK_ID, TASK_ID_2)
    ecs.add_response("list_tasks", {"taskArns": [TASK_ARN], "nextToken": "t2"},
                     {"cluster": "demo", "desiredStatus": "RUNNING"})
    ecs.add_response("list_tasks", {"taskArns": [second_arn]},
                     {"cluster": "demo", "desiredStatus": "RUNNING", "nextToken": "t2"})
    describe(ecs, "demo", [TASK_ARN, second_arn], task(),
             task(TASK_ID_2, [container("web", "rt-2")], exec_enabled=False,
                  group="family:app"))
    chooser = Recorder(index=0)
    with pytest.raises(UserError) as err:  # picks the family:app one, sorted first
        resolve_ecs(aws, "demo", None, None, chooser)
    [(title, offered)] = chooser.calls
    assert title == "no --task given; running tasks in cluster demo"
    assert offered == [
        Candidate(second_arn, TASK_ID_2, "family:app  app:3  RUNNING  exec disabled"),
        Candidate(TASK_ARN, TASK_ID, "service:web  app:3  RUNNING")]
    assert err.value.exit_code == Exit.EXEC_NOT_ENABLED


def test_several_tasks_chooser_pick_is_used(aws: Aws, ecs: Stubber) -> None:
    second_arn = TASK_ARN.replace(TASK_ID, TASK_ID_2)
    ecs.add_response("list_tasks", {"taskArns": [TASK_ARN, second_arn]})
    describe(ecs, "demo", [TASK_ARN, second_arn], task(),
             task(TASK_ID_2, [container("web", "rt-2")]))
    target = resolve_ecs(aws, "demo", None, "web", Recorder(index=1))
    assert target.target_id == f"ecs:demo_{TASK_ID_2}_rt-2"


def test_several_containers_need_a_choice(aws: Aws, ecs: Stubber) -> None:
    two = [container("web", RUNTIME), container("side", "rt-side", image="busybox")]
    describe(ecs, "demo", [TASK_ID], task(containers=two))
    chooser = Recorder(index=1)
    assert resolve_ecs(aws, "demo", TASK_ID, None, chooser).container_name == "side"
    assert chooser.calls[0][1] == [Candidate("web", "web", "nginx  RUNNING  exec agent RUNNING"),
                                   Candidate("side", "side",
                                             "busybox  RUNNING  exec agent RUNNING")]

    describe(ecs, "demo", [TASK_ID], task(containers=two))
    with pytest.raises(UserError) as err:
        resolve_ecs(aws, "demo", TASK_ID, None, non_interactive_chooser("container"))
    assert err.value.exit_code == Exit.AMBIGUOUS_TARGET
    assert str(err.value) == (f"no --container given; containers of task {TASK_ID}: "
                              "web(nginx), side(busybox)")

    describe(ecs, "demo", [TASK_ID], task(containers=two))
    target = resolve_ecs(aws, "demo", TASK_ID, "side", refuse)
    assert target.target_id == f"ecs:demo_{TASK_ID}_rt-side"


def test_unknown_container_lists_names(aws: Aws, ecs: Stubber) -> None:
    describe(ecs, "demo", [TASK_ID], task(containers=[container("web", RUNTIME),
                                                      container("side", "rt")]))
    with pytest.raises(UserError) as err:
        resolve_ecs(aws, "demo", TASK_ID, "db", refuse)
    assert err.value.exit_code == Exit.TARGET_NOT_FOUND
    assert "web, side" in str(err.value)


def test_list_containers(aws: Aws, ecs: Stubber) -> None:
    describe(ecs, "demo", [TASK_ID], task(containers=[container("web", RUNTIME, agent=None)]))
    assert list_containers(aws, "demo", TASK_ID) == [
        Candidate("web", "web", "nginx  RUNNING  no exec agent")]


@pytest.mark.parametrize(("described", "code"), [
    (task(exec_enabled=False), Exit.EXEC_NOT_ENABLED),
    (task(containers=[container("web", RUNTIME, agent="PENDING")]), Exit.EXEC_NOT_ENABLED),
    (task(containers=[container("web", RUNTIME, agent="STOPPED")]), Exit.EXEC_NOT_ENABLED),
    (task(status="STOPPED"), Exit.TARGET_NOT_CONNECTED),
    (task(containers=[container("web", None)]), Exit.TARGET_NOT_CONNECTED),
])
def test_task_that_cannot_be_execd(aws: Aws, ecs: Stubber, described: dict[str, Any],
                                   code: Exit) -> None:
    describe(ecs, "demo", [TASK_ID], described)
    with pytest.raises(UserError) as err:
        resolve_ecs(aws, "demo", TASK_ID, None, refuse)
    assert err.value.exit_code == code


def test_exec_disabled_message(aws: Aws, ecs: Stubber) -> None:
    describe(ecs, "demo", [TASK_ID], task(exec_enabled=False))
    with pytest.raises(UserError, match=r"ECS Exec is not enabled on task .*"
                                        r"--enable-execute-command"):
        resolve_ecs(aws, "demo", TASK_ID, None, refuse)


def test_task_not_found(aws: Aws, ecs: Stubber) -> None:
    ecs.add_response("describe_tasks", {"tasks": [], "failures": [
        {"arn": TASK_ARN, "reason": "MISSING"}]})
    with pytest.raises(UserError) as err:
        resolve_ecs(aws, "demo", TASK_ID, None, refuse)
    assert err.value.exit_code == Exit.TARGET_NOT_FOUND
    assert str(err.value) == f"task not found: {TASK_ID} in cluster demo"
