"""The local AWS endpoints driven by plain boto3 clients over real HTTP.

The endpoints run on an asyncio loop in a background thread (one loop for the
module, a fresh server and world per test); registry state is read on that
loop too, since the registry belongs to it.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from ssmshell.errors import UserError
from ssmshell.local.aws_api import EXEC_NOT_ENABLED, AwsEndpoints
from ssmshell.local.config import (
    Instance,
    LocalConfig,
    config_to_dict,
    default_config,
    load_config,
)
from ssmshell.local.kms import KmsError, LocalKms
from ssmshell.local.registry import Registry, SessionRecord

T = TypeVar("T")
REGION = "us-east-1"
ACCOUNT = "123456789012"
WEB = "i-0123456789abcdef0"
DB = "i-0fedcba9876543210"
OFFLINE = "i-00000000000000bad"
TASK2 = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"  # service web: containers app, sidecar
TASK1 = "1b2c3d4e5f60718293a4b5c6d7e8f90a"  # one container: worker
NO_EXEC = "2c3d4e5f60718293a4b5c6d7e8f90a1b"
DEMO_KEY = "6a3c2e1f-0b9d-4c8e-a7f6-5d4c3b2a1f0e"
SESSION_ID = re.compile(r"^local-[0-9a-f]{17}$")
ECS_SESSION_ID = re.compile(r"^ecs-execute-command-[0-9a-f]{17}$")
_BOTO = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                              region_name=REGION)


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-aws-api",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        async def on_loop() -> T:
            return fn(*args)

        return self.run(on_loop())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.stop()
        assert not lt.thread.is_alive()


@dataclass
class World:
    """One running endpoint server and its state, plus boto3 clients for it."""

    lt: LoopThread
    config: LocalConfig
    registry: Registry
    kms: LocalKms
    endpoints: AwsEndpoints
    terminated: list[str] = field(default_factory=list)
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)

    def client(self, service: str, region: str = REGION) -> Any:
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = _BOTO.client(
                service, endpoint_url=self.endpoints.url, region_name=region,
                config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
        return self._clients[key]

    def record(self, session_id: str) -> SessionRecord:
        record = self.lt.call(self.registry.get, session_id)
        assert record is not None
        return record

    def consume(self, session_id: str, token: str) -> bool:
        return self.lt.call(self.registry.consume_token, session_id, token)

    def close_clients(self) -> None:
        for client in self._clients.values():
            client.close()


def stream_url(session_id: str) -> str:
    return f"ws://127.0.0.1:9/v1/data-channel/{session_id}?role=publish_subscribe"


@pytest.fixture
def world(loop_thread: LoopThread) -> Iterator[World]:
    config = default_config()
    registry = Registry(stream_url_for=stream_url)
    kms = LocalKms(config)
    endpoints = AwsEndpoints(config, registry, kms)
    w = World(loop_thread, config, registry, kms, endpoints)
    registry.add_terminate_listener(w.terminated.append)
    loop_thread.run(endpoints.start())
    try:
        yield w
    finally:
        w.close_clients()
        loop_thread.run(endpoints.close())
        assert endpoints._http.connection_count == 0
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", endpoints.port),
                                                              timeout=1):
            pass


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    error = exc.value.response["Error"]
    return str(error.get("Code")), str(error.get("Message") or "")


# ---------------------------------------------------------------------------- SSM sessions


def test_start_session_shape_and_single_use_token(world: World) -> None:
    out = world.client("ssm").start_session(Target=WEB, Reason="debugging")
    session_id, token = out["SessionId"], out["TokenValue"]
    assert SESSION_ID.match(session_id)
    assert out["StreamUrl"] == stream_url(session_id)
    assert len(token) >= 40
    record = world.record(session_id)
    assert (record.target, record.document_name, record.session_type) == (
        WEB, "SSM-SessionManagerRunShell", "Standard_Stream")
    assert record.kms_key_id == "alias/ssmshell-demo"  # Session Manager preferences key
    assert record.properties is None and record.reason == "debugging"
    assert record.owner == f"arn:aws:iam::{ACCOUNT}:user/local"
    assert token not in repr(record)
    assert not world.consume(session_id, token + "x")
    assert world.consume(session_id, token)
    assert not world.consume(session_id, token)  # single use
    assert not world.consume("local-00000000000000000", token)


def test_resume_gives_a_new_token_and_retires_the_old_one(world: World) -> None:
    ssm = world.client("ssm")
    started = ssm.start_session(Target=WEB)
    session_id = started["SessionId"]
    resumed = ssm.resume_session(SessionId=session_id)
    assert resumed["SessionId"] == session_id
    assert resumed["StreamUrl"] == started["StreamUrl"]
    assert resumed["TokenValue"] != started["TokenValue"]
    assert not world.consume(session_id, started["TokenValue"])
    assert world.consume(session_id, resumed["TokenValue"])
    with pytest.raises(ClientError) as exc:
        ssm.resume_session(SessionId="local-0123456789abcdef0")
    assert error_of(exc)[0] == "DoesNotExistException"


def test_terminate_ends_the_session_and_tells_listeners(world: World) -> None:
    ssm = world.client("ssm")
    session_id = ssm.start_session(Target=WEB)["SessionId"]
    other = ssm.start_session(Target=DB)["SessionId"]
    assert ssm.terminate_session(SessionId=session_id)["SessionId"] == session_id
    assert ssm.terminate_session(SessionId=session_id)["SessionId"] == session_id
    assert world.terminated == [session_id]  # once, though terminated twice
    resumed = ssm.resume_session(SessionId=session_id)
    assert "TokenValue" not in resumed
    assert world.record(session_id).status == "Terminated"
    assert world.record(session_id).end_date is not None
    history = ssm.describe_sessions(State="History")["Sessions"]
    active = ssm.describe_sessions(State="Active")["Sessions"]
    assert [s["SessionId"] for s in history] == [session_id]
    assert history[0]["Target"] == WEB and "EndDate" in history[0]
    assert [s["SessionId"] for s in active] == [other]
    filtered = ssm.describe_sessions(State="Active", Filters=[{"key": "Target", "value": WEB}])
    assert filtered["Sessions"] == []
    # Unknown sessions terminate fine, as in SSM.
    assert ssm.terminate_session(SessionId="local-0000")["SessionId"] == "local-0000"


def test_start_session_target_errors(world: World) -> None:
    ssm = world.client("ssm")
    with pytest.raises(ClientError) as exc:
        ssm.start_session(Target="i-0aaaaaaaaaaaaaaaa")
    assert error_of(exc)[0] == "InvalidTarget"
    with pytest.raises(ClientError) as exc:
        ssm.start_session(Target=OFFLINE)
    assert error_of(exc) == ("TargetNotConnected", f"{OFFLINE} is not connected.")
    with pytest.raises(ClientError) as exc:
        ssm.start_session(Target=WEB, DocumentName="AWS-NoSuchDocument")
    assert error_of(exc)[0] == "InvalidDocument"


def test_port_documents_give_string_properties_and_no_kms(world: World) -> None:
    ssm = world.client("ssm")
    out = ssm.start_session(Target=WEB, DocumentName="AWS-StartPortForwardingSession",
                            Parameters={"portNumber": ["8080"]})
    record = world.record(out["SessionId"])
    assert record.session_type == "Port" and record.kms_key_id is None
    assert record.properties == {"portNumber": "8080", "type": "LocalPortForwarding",
                                 "localPortNumber": "0"}
    out = ssm.start_session(Target=WEB,
                            DocumentName="AWS-StartPortForwardingSessionToRemoteHost",
                            Parameters={"host": ["db.internal"], "portNumber": ["5432"],
                                        "localPortNumber": ["15432"]})
    assert world.record(out["SessionId"]).properties == {
        "portNumber": "5432", "type": "LocalPortForwarding", "localPortNumber": "15432",
        "host": "db.internal"}
    out = ssm.start_session(Target=WEB, DocumentName="AWS-StartSSHSession")
    assert world.record(out["SessionId"]).properties == {"portNumber": "22"}
    for document, parameters in [
            ("AWS-StartPortForwardingSessionToRemoteHost", {"portNumber": ["80"]}),  # no host
            ("AWS-StartPortForwardingSession", {"nope": ["1"]}),
            ("AWS-StartPortForwardingSession", {"portNumber": ["99999"]})]:
        with pytest.raises(ClientError) as exc:
            ssm.start_session(Target=WEB, DocumentName=document, Parameters=parameters)
        assert error_of(exc)[0] == "InvalidParameters", (document, parameters)


@pytest.mark.parametrize(("document", "session_type", "separate"), [
    ("AWS-StartInteractiveCommand", "InteractiveCommands", False),
    ("AWS-StartNonInteractiveCommand", "NonInteractiveCommands", False),
    ("SSMShell-NonInteractiveCommand", "NonInteractiveCommands", True),
])
def test_command_documents(world: World, document: str, session_type: str,
                           separate: bool) -> None:
    out = world.client("ssm").start_session(Target=WEB, DocumentName=document,
                                            Parameters={"command": ["uname -a; exit 3"]})
    record = world.record(out["SessionId"])
    assert (record.session_type, record.command, record.separate_output_stream) == (
        session_type, "uname -a; exit 3", separate)
    assert record.properties is None
    assert record.kms_key_id == "alias/ssmshell-demo"


def test_no_preferences_key_means_no_kms(world: World) -> None:
    world.config.session_kms_key_id = None
    out = world.client("ssm").start_session(Target=WEB)
    assert world.record(out["SessionId"]).kms_key_id is None


def test_create_document_then_start_session_with_it(world: World) -> None:
    ssm = world.client("ssm")
    content = {"schemaVersion": "1.0", "description": "tail a log",
               "sessionType": "NonInteractiveCommands",
               "parameters": {"file": {"type": "String", "default": "/var/log/syslog"}},
               "properties": {"linux": {"commands": "tail -n 5 {{ file }}",
                                        "separateOutputStream": "true",
                                        "stdOutSeparatorPrefix": "OUT:",
                                        "stdErrSeparatorPrefix": "ERR:"}}}
    created = ssm.create_document(Name="Team-TailLog", Content=json.dumps(content),
                                  DocumentType="Session", DocumentFormat="JSON")
    assert created["DocumentDescription"]["Name"] == "Team-TailLog"
    assert created["DocumentDescription"]["DocumentType"] == "Session"
    described = ssm.describe_document(Name="Team-TailLog")["Document"]
    assert described["Parameters"] == [{"Name": "file", "Type": "String", "Description": "",
                                        "DefaultValue": "/var/log/syslog"}]
    assert json.loads(ssm.get_document(Name="Team-TailLog")["Content"]) == content
    out = ssm.start_session(Target=WEB, DocumentName="Team-TailLog",
                            Parameters={"file": ["/tmp/x.log"]})
    record = world.record(out["SessionId"])
    assert (record.session_type, record.command, record.separate_output_stream,
            record.stdout_prefix, record.stderr_prefix) == (
        "NonInteractiveCommands", "tail -n 5 /tmp/x.log", True, "OUT:", "ERR:")
    with pytest.raises(ClientError) as exc:
        ssm.create_document(Name="Team-TailLog", Content=json.dumps(content),
                            DocumentType="Session")
    assert error_of(exc)[0] == "DocumentAlreadyExists"
    with pytest.raises(ClientError) as exc:
        ssm.create_document(Name="Team-Bad", Content='{"schemaVersion": "1.0"}',
                            DocumentType="Session")
    assert error_of(exc)[0] == "InvalidDocumentContent"
    with pytest.raises(ClientError) as exc:
        ssm.describe_document(Name="Team-Nothing")
    assert error_of(exc)[0] == "InvalidDocument"
    builtin = ssm.describe_document(Name="AWS-StartSSHSession")["Document"]
    assert builtin["Owner"] == "Amazon"


# ---------------------------------------------------------------------------- SSM instances


def test_describe_instance_information_filters(world: World) -> None:
    ssm = world.client("ssm")
    every = ssm.describe_instance_information()["InstanceInformationList"]
    assert {i["InstanceId"] for i in every} == {i.instance_id for i in world.config.instances}
    web = next(i for i in every if i["InstanceId"] == WEB)
    assert web["PingStatus"] == "Online" and web["ResourceType"] == "EC2Instance"
    assert web["IPAddress"] == "10.0.0.11" and web["PlatformType"] == "Linux"
    assert web["ComputerName"] == "ip-10-0-0-11.ec2.internal"
    assert web["AgentVersion"] == "3.3.1142.0"
    managed = next(i for i in every if i["InstanceId"].startswith("mi-"))
    assert managed["ResourceType"] == "ManagedInstance" and managed["Name"] == "on-prem-box"

    def ids(**kwargs: Any) -> set[str]:
        out = ssm.describe_instance_information(**kwargs)["InstanceInformationList"]
        return {i["InstanceId"] for i in out}

    assert ids(Filters=[{"Key": "PingStatus", "Values": ["ConnectionLost"]}]) == {OFFLINE}
    assert ids(Filters=[{"Key": "tag:Name", "Values": ["demo-web"]}]) == {WEB}
    assert ids(Filters=[{"Key": "InstanceIds", "Values": [WEB, DB]},
                        {"Key": "PingStatus", "Values": ["Online"]}]) == {WEB, DB}
    assert ids(InstanceInformationFilterList=[{"key": "InstanceIds", "valueSet": [DB]}]) == {DB}
    assert ids(Filters=[{"Key": "ResourceType", "Values": ["ManagedInstance"]}]) == {
        "mi-0123456789abcdef0"}
    with pytest.raises(ClientError) as exc:
        ssm.describe_instance_information(Filters=[{"Key": "Color", "Values": ["red"]}])
    assert error_of(exc)[0] == "InvalidFilterKey"


def test_describe_instance_information_paginates(world: World) -> None:
    extra = [Instance(f"i-{n:017x}", f"bulk-{n}", f"10.1.0.{n}") for n in range(1, 12)]
    world.config.instances.extend(extra)
    paginator = world.client("ssm").get_paginator("describe_instance_information")
    pages = list(paginator.paginate(PaginationConfig={"PageSize": 5}))
    assert [len(p["InstanceInformationList"]) for p in pages] == [5, 5, 5]
    seen = [i["InstanceId"] for p in pages for i in p["InstanceInformationList"]]
    assert seen == [i.instance_id for i in world.config.instances]
    with pytest.raises(ClientError) as exc:
        world.client("ssm").describe_instance_information(NextToken="garbage")
    assert error_of(exc)[0] == "InvalidNextToken"


# ---------------------------------------------------------------------------- ECS


def test_execute_command_happy_path(world: World) -> None:
    ecs = world.client("ecs")
    out = ecs.execute_command(cluster="demo", task=TASK2, container="sidecar",
                              command="/bin/sh", interactive=True)
    sidecar_runtime = f"{TASK2}-2345678901"
    assert out["clusterArn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/demo"
    assert out["taskArn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/demo/{TASK2}"
    assert out["containerName"] == "sidecar" and out["interactive"] is True
    assert out["containerArn"].startswith(
        f"arn:aws:ecs:{REGION}:{ACCOUNT}:container/demo/{TASK2}/")
    session = out["session"]
    assert ECS_SESSION_ID.match(session["sessionId"])
    assert session["streamUrl"] == stream_url(session["sessionId"])
    record = world.record(session["sessionId"])
    assert record.target == f"ecs:demo_{TASK2}_{sidecar_runtime}"
    assert (record.session_type, record.command) == ("InteractiveCommands", "/bin/sh")
    assert record.kms_key_id == DEMO_KEY  # the cluster's executeCommandConfiguration key
    assert world.consume(session["sessionId"], session["tokenValue"])
    # ARNs work too, and a single-container task needs no container name.
    out = ecs.execute_command(cluster=f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/demo",
                              task=f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/demo/{TASK1}",
                              command="ls", interactive=True)
    assert out["containerName"] == "worker"
    # A cluster without KMS gives an unencrypted session.
    out = ecs.execute_command(cluster="plain", task="3d4e5f60718293a4b5c6d7e8f90a1b2c",
                              command="ls", interactive=True)
    assert world.record(out["session"]["sessionId"]).kms_key_id is None


def test_execute_command_errors(world: World) -> None:
    ecs = world.client("ecs")

    def fails(**kwargs: Any) -> tuple[str, str]:
        params = {"cluster": "demo", "command": "/bin/sh", "interactive": True, **kwargs}
        with pytest.raises(ClientError) as exc:
            ecs.execute_command(**params)
        return error_of(exc)

    code, message = fails(task=TASK2)
    assert code == "InvalidParameterException"
    assert "multiple containers" in message and "container name" in message
    assert fails(task=NO_EXEC) == ("InvalidParameterException", EXEC_NOT_ENABLED)
    assert "execute command was not enabled" in EXEC_NOT_ENABLED
    world.config.tasks[1].containers[0].managed_agent_status = "STOPPED"
    assert fails(task=TASK1) == ("InvalidParameterException", EXEC_NOT_ENABLED)
    assert fails(cluster="nope", task=TASK1) == ("ClusterNotFoundException",
                                                 "Cluster not found.")
    assert fails(task="f" * 32)[0] == "InvalidParameterException"
    assert fails(task="short") == ("InvalidParameterException",
                                   "task length should be one of [32,36]")
    assert fails(task=TASK2, container="nope")[0] == "InvalidParameterException"
    assert fails(task=TASK2, container="app", interactive=False) == (
        "InvalidParameterException", "Interactive is the only mode supported currently.")
    assert world.lt.call(world.registry.sessions) == []


def test_ecs_listing_calls(world: World) -> None:
    ecs = world.client("ecs")
    assert ecs.list_clusters()["clusterArns"] == [
        f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/demo",
        f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/plain"]
    described = ecs.describe_clusters(clusters=["demo", "plain", "ghost"],
                                      include=["SETTINGS"])
    demo, plain = described["clusters"]
    assert demo["configuration"]["executeCommandConfiguration"] == {
        "kmsKeyId": DEMO_KEY, "logging": "DEFAULT"}
    assert "configuration" not in plain and demo["settings"]
    assert described["failures"] == [
        {"arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/ghost", "reason": "MISSING"}]
    assert ecs.list_services(cluster="demo")["serviceArns"] == [
        f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/demo/web"]
    web_tasks = ecs.list_tasks(cluster="demo", serviceName="web",
                               desiredStatus="RUNNING")["taskArns"]
    assert web_tasks == [f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/demo/{TASK2}"]
    assert len(ecs.list_tasks(cluster="demo")["taskArns"]) == 3
    assert ecs.list_tasks(cluster="demo", desiredStatus="STOPPED")["taskArns"] == []
    with pytest.raises(ClientError) as exc:
        ecs.list_tasks(cluster="demo", serviceName="ghost")
    assert error_of(exc)[0] == "ServiceNotFoundException"
    out = ecs.describe_tasks(cluster="demo", tasks=[TASK2, NO_EXEC, "f" * 32])
    web, legacy = out["tasks"]
    assert out["failures"] == [{"arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/demo/{'f' * 32}",
                                "reason": "MISSING"}]
    assert web["group"] == "service:web" and web["lastStatus"] == "RUNNING"
    assert web["taskDefinitionArn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/web:1"
    assert web["enableExecuteCommand"] is True
    assert [(c["name"], c["runtimeId"], c["managedAgents"][0]["name"],
             c["managedAgents"][0]["lastStatus"]) for c in web["containers"]] == [
        ("app", f"{TASK2}-1234567890", "ExecuteCommandAgent", "RUNNING"),
        ("sidecar", f"{TASK2}-2345678901", "ExecuteCommandAgent", "RUNNING")]
    assert legacy["enableExecuteCommand"] is False and legacy["group"] == "family:legacy"
    with pytest.raises(ClientError) as exc:
        ecs.list_tasks(cluster="ghost")
    assert error_of(exc) == ("ClusterNotFoundException", "Cluster not found.")


# ---------------------------------------------------------------------------- KMS


def context(session_id: str = "local-0123456789abcdef0", target: str = WEB) -> dict[str, str]:
    return {"aws:ssm:SessionId": session_id, "aws:ssm:TargetId": target}


def test_kms_round_trip_binds_the_context(world: World) -> None:
    kms = world.client("kms")
    out = kms.generate_data_key(KeyId="alias/ssmshell-demo", NumberOfBytes=64,
                                EncryptionContext=context())
    assert len(out["Plaintext"]) == 64
    assert out["KeyId"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{DEMO_KEY}"
    blob = out["CiphertextBlob"]
    back = kms.decrypt(CiphertextBlob=blob, EncryptionContext=context(), KeyId=DEMO_KEY)
    assert back["Plaintext"] == out["Plaintext"] and back["KeyId"] == out["KeyId"]
    # The agent emulator calls the same LocalKms in-process.
    assert world.lt.call(world.kms.decrypt, blob, context(), out["KeyId"]) == out["Plaintext"]
    wrong_contexts = [
        context(target="i-0fedcba9876543210"),  # changed value
        {"aws:ssm:SessionId": "local-0123456789abcdef0"},  # missing pair
        {**context(), "aws:ssm:RandomChallenge": "AAAA"},  # extra pair
        {},
    ]
    for wrong in wrong_contexts:
        with pytest.raises(ClientError) as exc:
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=wrong)
        assert error_of(exc) == ("InvalidCiphertextException", ""), wrong
    damaged = bytes(blob[:-1]) + bytes([blob[-1] ^ 1])
    with pytest.raises(ClientError) as exc:
        kms.decrypt(CiphertextBlob=damaged, EncryptionContext=context())
    assert error_of(exc)[0] == "InvalidCiphertextException"
    world.kms.fail_decrypt = True
    with pytest.raises(ClientError) as exc:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext=context())
    assert error_of(exc)[0] == "InvalidCiphertextException"
    assert [c.operation for c in world.kms.calls].count("GenerateDataKey") == 1


def test_kms_key_lookup_and_errors(world: World) -> None:
    kms = world.client("kms")
    arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{DEMO_KEY}"
    for key_id in (DEMO_KEY, arn, "alias/ssmshell-demo",
                   f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/ssmshell-demo"):
        assert kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")["KeyId"] == arn
    with pytest.raises(ClientError) as exc:
        kms.generate_data_key(KeyId="alias/ssmshell-denied", NumberOfBytes=64)
    code, message = error_of(exc)
    assert code == "AccessDeniedException"
    assert message.startswith(f"User: arn:aws:iam::{ACCOUNT}:user/local is not authorized "
                              "to perform: kms:GenerateDataKey on resource: arn:aws:kms:")
    assert message.endswith("because no identity-based policy allows the kms:GenerateDataKey "
                            "action")
    missing = "11111111-2222-3333-4444-555555555555"
    with pytest.raises(ClientError) as exc:
        kms.generate_data_key(KeyId=missing, NumberOfBytes=64)
    assert error_of(exc) == ("NotFoundException", f"Key 'arn:aws:kms:{REGION}:{ACCOUNT}:key/"
                                                  f"{missing}' does not exist")
    with pytest.raises(ClientError) as exc:
        kms.generate_data_key(KeyId="alias/ghost", NumberOfBytes=64)
    assert error_of(exc)[0] == "NotFoundException"
    blob = kms.generate_data_key(KeyId=DEMO_KEY, NumberOfBytes=64,
                                 EncryptionContext=context())["CiphertextBlob"]
    with pytest.raises(ClientError) as exc:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext=context(),
                    KeyId="0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0")
    assert error_of(exc)[0] == "IncorrectKeyException"


def test_local_kms_directly() -> None:
    config = default_config()
    kms = LocalKms(config)
    plaintext, blob = kms.generate_data_key("alias/ssmshell-demo", 64, context())
    assert kms.decrypt(blob, dict(reversed(list(context().items())))) == plaintext
    with pytest.raises(KmsError) as exc:
        LocalKms(config).decrypt(blob, context())  # another KMS's master secret
    assert (exc.value.code, exc.value.message) == ("InvalidCiphertextException", "")
    with pytest.raises(KmsError, match="InvalidCiphertextException"):
        kms.decrypt(b"\x01\x05short", context())
    assert plaintext.hex() not in repr(kms.calls)


# ---------------------------------------------------------------------------- faults, auth


def test_denied_actions(world: World) -> None:
    world.config.denied_actions = {"ssm:StartSession", "ecs:ExecuteCommand",
                                   "kms:GenerateDataKey", "ssm:DescribeInstanceInformation",
                                   "ec2:DescribeInstances"}
    cases: list[tuple[Callable[[], Any], str, str]] = [
        (lambda: world.client("ssm").start_session(Target=WEB), "ssm:StartSession",
         f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{WEB}"),
        (lambda: world.client("ecs").execute_command(
            cluster="demo", task=TASK1, command="ls", interactive=True),
         "ecs:ExecuteCommand", f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/demo/{TASK1}"),
        (lambda: world.client("kms").generate_data_key(KeyId=DEMO_KEY, NumberOfBytes=64),
         "kms:GenerateDataKey", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{DEMO_KEY}"),
        (lambda: world.client("ssm").describe_instance_information(),
         "ssm:DescribeInstanceInformation", f"arn:aws:ssm:{REGION}:{ACCOUNT}:*"),
    ]
    for call, action, resource in cases:
        with pytest.raises(ClientError) as exc:
            call()
        assert error_of(exc) == (
            "AccessDeniedException",
            f"User: arn:aws:iam::{ACCOUNT}:user/local is not authorized to perform: {action} "
            f"on resource: {resource} because no identity-based policy allows the {action} "
            "action")
    with pytest.raises(ClientError) as exc:
        world.client("ec2").describe_instances()
    code, message = error_of(exc)
    assert code == "UnauthorizedOperation" and "ec2:DescribeInstances" in message
    assert world.lt.call(world.registry.sessions) == []
    world.client("ssm").terminate_session(SessionId="local-0")  # not denied


def test_throttling(world: World) -> None:
    world.endpoints.throttle_next = 2
    ssm, ecs = world.client("ssm"), world.client("ecs")
    for call in (lambda: ssm.start_session(Target=WEB), ecs.list_clusters):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_of(exc) == ("ThrottlingException", "Rate exceeded")
    assert ecs.list_clusters()["clusterArns"]
    world.endpoints.throttle_next = 1
    with pytest.raises(ClientError) as exc:
        world.client("ec2").describe_instances()
    assert error_of(exc)[0] == "RequestLimitExceeded"
    assert world.endpoints.requests[:3] == ["AmazonSSM.StartSession",
                                            "AmazonEC2ContainerServiceV20141113.ListClusters",
                                            "AmazonEC2ContainerServiceV20141113.ListClusters"]


def raw_post(world: World, headers: dict[str, str], body: bytes = b"{}") -> tuple[int, bytes]:
    request = urllib.request.Request(world.endpoints.url + "/", data=body, method="POST",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), bytes(exc.read())


SSM_JSON = {"Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AmazonSSM.StartSession"}


def test_unsigned_and_malformed_requests_are_refused(world: World) -> None:
    status, body = raw_post(world, SSM_JSON, json.dumps({"Target": WEB}).encode())
    assert status == 403
    assert json.loads(body) == {"__type": "MissingAuthenticationTokenException",
                                "message": "Missing Authentication Token"}
    secret_akid = "AKIAVERYSECRET000000"
    bad_auth = [
        f"AWS4-HMAC-SHA256 Credential={secret_akid}/20240101/{REGION}/ssm/aws4_request",
        f"AWS4-HMAC-SHA256 Credential={secret_akid}/20240101/ssm, SignedHeaders=host, "
        f"Signature={'a' * 64}",
        f"Bearer {secret_akid}",
    ]
    for auth in bad_auth:
        status, body = raw_post(world, {**SSM_JSON, "Authorization": auth,
                                        "X-Amz-Date": "20240101T000000Z"})
        error = json.loads(body)
        assert status == 403 and error["__type"] == "IncompleteSignatureException", auth
        assert secret_akid not in error["message"]
    assert world.lt.call(world.registry.sessions) == []
    # Signed for another region or service: refused like AWS does.
    with pytest.raises(ClientError) as exc:
        world.client("ssm", region="eu-west-1").describe_instance_information()
    assert error_of(exc)[0] == "InvalidSignatureException"
    good = (f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/{REGION}/kms/aws4_request, "
            f"SignedHeaders=host;x-amz-date, Signature={'0' * 64}")
    status, body = raw_post(world, {**SSM_JSON, "Authorization": good,
                                    "X-Amz-Date": "20240101T000000Z"})
    assert status == 403 and json.loads(body)["__type"] == "InvalidSignatureException"
    status, body = raw_post(world, {**SSM_JSON, "Authorization": good.replace("/kms/", "/ssm/"),
                                    "X-Amz-Date": "20240101T000000Z",
                                    "X-Amz-Target": "AmazonSSM.NoSuchThing"})
    assert status == 400 and json.loads(body) == {"__type": "UnknownOperationException"}


# ---------------------------------------------------------------------------- EC2


def test_ec2_describe_instances(world: World) -> None:
    ec2 = world.client("ec2")
    out = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["demo-web"]},
                                          {"Name": "instance-state-name",
                                           "Values": ["running", "pending"]}])
    instances = [i for r in out["Reservations"] for i in r["Instances"]]
    assert len(instances) == 1
    web = instances[0]
    assert web["InstanceId"] == WEB and web["PrivateIpAddress"] == "10.0.0.11"
    assert web["PublicIpAddress"] == "203.0.113.11"
    assert web["PrivateDnsName"] == "ip-10-0-0-11.ec2.internal"
    assert web["PublicDnsName"] == "ec2-203-0-113-11.compute-1.amazonaws.com"
    assert web["State"] == {"Code": 16, "Name": "running"}
    assert web["PlatformDetails"] == "Linux/UNIX"
    assert {"Key": "Name", "Value": "demo-web"} in web["Tags"]

    def ids(**kwargs: Any) -> set[str]:
        out = ec2.describe_instances(**kwargs)
        return {i["InstanceId"] for r in out["Reservations"] for i in r["Instances"]}

    assert ids(Filters=[{"Name": "tag:Name", "Values": ["demo-*"]}]) == {WEB, DB, OFFLINE}
    assert ids(Filters=[{"Name": "private-ip-address", "Values": ["10.0.0.12"]}]) == {DB}
    assert ids(Filters=[{"Name": "ip-address", "Values": ["203.0.113.11"]}]) == {WEB}
    assert ids(Filters=[{"Name": "private-dns-name",
                         "Values": ["ip-10-0-0-13.ec2.internal"]}]) == {OFFLINE}
    assert ids(Filters=[{"Name": "instance-id", "Values": [DB, "i-0aaaaaaaaaaaaaaaa"]}]) == {DB}
    assert ids(InstanceIds=[WEB]) == {WEB}
    assert "mi-0123456789abcdef0" not in ids()
    world.config.instances[1].state = "stopped"
    assert ids(Filters=[{"Name": "instance-state-name", "Values": ["running"]}]) == {
        WEB, OFFLINE}
    with pytest.raises(ClientError) as exc:
        ec2.describe_instances(InstanceIds=["i-0aaaaaaaaaaaaaaaa"])
    assert error_of(exc) == ("InvalidInstanceID.NotFound",
                             "The instance ID 'i-0aaaaaaaaaaaaaaaa' does not exist")
    with pytest.raises(ClientError) as exc:
        ec2.describe_instances(Filters=[{"Name": "colour", "Values": ["red"]}])
    assert error_of(exc) == ("InvalidParameterValue", "The filter 'colour' is invalid")


def test_ec2_pagination_and_unknown_action(world: World) -> None:
    world.config.instances.extend(
        Instance(f"i-{n:017x}", f"bulk-{n}", f"10.1.0.{n}") for n in range(1, 9))
    paginator = world.client("ec2").get_paginator("describe_instances")
    pages = list(paginator.paginate(PaginationConfig={"PageSize": 5}))
    assert [len(p["Reservations"]) for p in pages] == [5, 5, 1]
    auth = (f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/{REGION}/ec2/aws4_request, "
            f"SignedHeaders=host;x-amz-date, Signature={'0' * 64}")
    status, body = raw_post(world, {"Content-Type": "application/x-www-form-urlencoded",
                                    "Authorization": auth, "X-Amz-Date": "20240101T000000Z"},
                            b"Action=RunInstances&Version=2016-11-15")
    assert status == 400
    assert re.search(rb"<Response><Errors><Error><Code>InvalidAction</Code><Message>The action "
                     rb"RunInstances is not valid for this web service.</Message></Error>"
                     rb"</Errors><RequestID>[0-9a-f-]+</RequestID></Response>", body)


# ---------------------------------------------------------------------------- HTTP server


def test_http_keep_alive_and_connection_close(world: World) -> None:
    request = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\n"
               b"X-Amz-Target: AmazonSSM.StartSession\r\nContent-Length: 2\r\n\r\n{}")
    with socket.create_connection(("127.0.0.1", world.endpoints.port), timeout=5) as sock:
        sock.sendall(request + request)
        data = b""
        while data.count(b"Missing Authentication Token") < 2:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert data.count(b"HTTP/1.1 403 Forbidden\r\n") == 2
        assert b"Connection: keep-alive" in data
        sock.sendall(request.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"))
        tail = b""
        while chunk := sock.recv(65536):
            tail += chunk
        assert tail.startswith(b"HTTP/1.1 403") and b"Connection: close" in tail
    with socket.create_connection(("127.0.0.1", world.endpoints.port), timeout=5) as sock:
        sock.sendall(request.replace(b"HTTP/1.1", b"HTTP/1.0"))
        reply = b""
        while chunk := sock.recv(65536):  # HTTP/1.0 without keep-alive: server closes
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 403")
    with socket.create_connection(("127.0.0.1", world.endpoints.port), timeout=5) as sock:
        sock.sendall(b"garbage\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")


def test_idle_keep_alive_connection_is_closed_by_close(world: World) -> None:
    sock = socket.create_connection(("127.0.0.1", world.endpoints.port), timeout=5)
    try:
        world.client("ssm").describe_instance_information()  # a pooled connection too
        assert world.endpoints._http.connection_count >= 1
    finally:
        sock.close()


# ---------------------------------------------------------------------------- config


def test_config_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    data = config_to_dict(default_config())
    data["denied_actions"] = ["ssm:StartSession"]
    path.write_text(json.dumps(data))
    loaded = load_config(path)
    assert loaded.instances == default_config().instances
    assert loaded.tasks == default_config().tasks
    assert loaded.denied_actions == {"ssm:StartSession"}
    minimal = tmp_path / "min.json"
    minimal.write_text(json.dumps({"instances": [{"instance_id": "i-0123456789abcdef0",
                                                  "name": "one"}]}))
    assert load_config(minimal).instances[0].private_dns == "ip-10-0-0-10.ec2.internal"
    for bad, words in [
            ({"instances": [{"instance_id": "web"}]}, "bad instance id"),
            ({"instances": [{"instance_id": WEB, "colour": "red"}]}, "colour"),
            ({"clusters": [{"name": "c"}], "tasks": [{"task_id": "f" * 32, "cluster": "x",
                                                      "containers": [{"name": "a",
                                                                      "runtime_id": "r"}]}]},
             "unknown cluster"),
            ({"session_kms_key_id": "alias/none"}, "unknown KMS key"),
            ({"instances": "nope"}, "expected a list"),
            ({"require_kms_challenge": "yes"}, "true or false")]:
        path.write_text(json.dumps(bad))
        with pytest.raises(UserError, match=words):
            load_config(path)
    path.write_text("{not json")
    with pytest.raises(UserError, match="cannot parse"):
        load_config(path)


def test_toml_config(tmp_path: Path) -> None:
    pytest.importorskip("tomllib")
    path = tmp_path / "world.toml"
    path.write_text('region = "eu-west-1"\n\n[[instances]]\ninstance_id = "i-0123456789abcdef0"\n'
                    'name = "toml-box"\n')
    config = load_config(path)
    assert config.region == "eu-west-1" and config.instances[0].name == "toml-box"


def test_start_session_on_an_ecs_target(world: World) -> None:
    """SSM port forwarding to a container uses the ecs:<cluster>_<task>_<runtime> target."""
    target = f"ecs:demo_{TASK2}_{TASK2}-1234567890"
    out = world.client("ssm").start_session(Target=target,
                                            DocumentName="AWS-StartPortForwardingSession",
                                            Parameters={"portNumber": ["80"]})
    assert world.record(out["SessionId"]).target == target
    with pytest.raises(ClientError) as exc:
        world.client("ssm").start_session(Target=f"ecs:demo_{NO_EXEC}_{NO_EXEC}-4567890123")
    assert error_of(exc)[0] == "TargetNotConnected"
