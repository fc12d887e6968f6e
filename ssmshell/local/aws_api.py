"""Local AWS endpoints: SSM, ECS and KMS (JSON 1.1) and EC2 DescribeInstances (query/XML).

One HTTP server for all of them, so ``--endpoint-url`` / ``AWS_ENDPOINT_URL``
is one URL. Requests must carry a SigV4 Authorization header of the right
shape (the signature itself is not verified). Errors have AWS's shapes.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from ssmshell.local.config import Instance, LocalConfig, Task
from ssmshell.local.httpserver import HttpServer, Request, Response, serve
from ssmshell.local.kms import KmsError, LocalKms
from ssmshell.local.registry import (
    BUILTIN_DOCUMENTS,
    DocumentError,
    Registry,
    resolve_document,
)

JSON = "application/x-amz-json-1.1"
EXEC_NOT_ENABLED = (
    "The execute command failed because execute command was not enabled when the task "
    "was run or the execute command agent isn’t running. Wait and try the command again "
    "or run a new task with execute command enabled and try again.")
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/\s]+)/(\d{8})/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request,"
    r"\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$")
_INSTANCE_ID = re.compile(r"^(i-[0-9a-f]{8}([0-9a-f]{9})?|mi-[0-9a-f]{17})$")


class ApiError(Exception):
    """An AWS error response."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class AwsEndpoints:
    """The local AWS JSON/query endpoints.

    Args:
        config: the fake world.
        registry: sessions and tokens.
        kms: the local KMS.

    Attributes:
        throttle_next: the next N requests fail with ThrottlingException (a fault knob).
        requests: (target, time) of every request, for tests and benchmarks.
    """

    def __init__(self, config: LocalConfig, registry: Registry, kms: LocalKms) -> None:
        self.config = config
        self.registry = registry
        self.kms = kms
        self.throttle_next = 0
        self.requests: list[tuple[str, float]] = []
        self._server: HttpServer | None = None
        self.port = 0
        self.host = "127.0.0.1"
        self._ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "AmazonSSM.StartSession": self.start_session,
            "AmazonSSM.ResumeSession": self.resume_session,
            "AmazonSSM.TerminateSession": self.terminate_session,
            "AmazonSSM.DescribeInstanceInformation": self.describe_instance_information,
            "AmazonSSM.DescribeSessions": self.describe_sessions,
            "AmazonSSM.CreateDocument": self.create_document,
            "AmazonSSM.DescribeDocument": self.describe_document,
            "AmazonEC2ContainerServiceV20141113.ExecuteCommand": self.execute_command,
            "AmazonEC2ContainerServiceV20141113.ListClusters": self.list_clusters,
            "AmazonEC2ContainerServiceV20141113.DescribeClusters": self.describe_clusters,
            "AmazonEC2ContainerServiceV20141113.ListServices": self.list_services,
            "AmazonEC2ContainerServiceV20141113.ListTasks": self.list_tasks,
            "AmazonEC2ContainerServiceV20141113.DescribeTasks": self.describe_tasks,
            "TrentService.GenerateDataKey": self.generate_data_key,
            "TrentService.Decrypt": self.decrypt,
        }

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the bound port."""
        self._server = await serve(self._handle, host, port)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        is_query = not target and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded")
        self.requests.append((target or "query", time.monotonic()))
        try:
            self._check_signature(request)
            if self.throttle_next > 0:
                self.throttle_next -= 1
                raise ApiError("ThrottlingException", "Rate exceeded")
            if is_query:
                return self._ec2(request)
            op = self._ops.get(target)
            if op is None:
                raise ApiError("UnknownOperationException", "")
            try:
                params = json.loads(request.body or b"{}")
            except ValueError:
                raise ApiError("SerializationException", "Start of structure or map "
                               "found where not expected.") from None
            if not isinstance(params, dict):
                raise ApiError("SerializationException", "Expected a JSON object.")
            return Response(200, json.dumps(op(params)).encode(), {"Content-Type": JSON})
        except ApiError as exc:
            if is_query:
                return self._ec2_error(exc)
            body = json.dumps({"__type": exc.code, "message": exc.message}).encode()
            return Response(exc.status, body, {"Content-Type": JSON,
                                               "x-amzn-ErrorType": exc.code})

    def _check_signature(self, request: Request) -> None:
        auth = request.headers.get("authorization")
        if not auth:
            raise ApiError("MissingAuthenticationTokenException", "Missing Authentication Token",
                           403)
        match = _AUTH.match(auth)
        if match is None or "x-amz-date" not in request.headers:
            raise ApiError("IncompleteSignatureException",
                           "Authorization header requires 'Credential', 'Signature' and "
                           "'SignedHeaders' parameters, and an X-Amz-Date header. "
                           "Authorization=AWS4-HMAC-SHA256 (shape only shown)", 403)

    def _deny(self, action: str, resource: str) -> None:
        if action in self.config.denied_actions:
            raise ApiError("AccessDeniedException",
                           f"User: {self.config.caller_arn} is not authorized to perform: "
                           f"{action} on resource: {resource} because no identity-based "
                           f"policy allows the {action} action")

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.config.region}:{self.config.account_id}:{resource}"

    # ------------------------------------------------------------------ SSM

    def _document(self, name: str) -> dict[str, Any]:
        content = self.config.documents.get(name) or BUILTIN_DOCUMENTS.get(name)
        if content is None:
            raise ApiError("InvalidDocument", f"Document with name {name} does not exist.")
        return content

    def start_session(self, params: dict[str, Any]) -> dict[str, Any]:
        target = str(params.get("Target", ""))
        document_name = str(params.get("DocumentName") or "SSM-SessionManagerRunShell")
        self._deny("ssm:StartSession", self._arn("ec2", f"instance/{target}"))
        instance = self.config.instance(target)
        if instance is None:
            if target.startswith("ecs:"):
                raise ApiError("InvalidTarget", "ECS targets must use ecs:ExecuteCommand.")
            raise ApiError("InvalidTarget", f"Target {target} is not valid or not registered."
                           if _INSTANCE_ID.match(target) else
                           f"1 validation error detected: Value '{target}' at 'target' "
                           "failed to satisfy constraint: Member must satisfy regular "
                           "expression pattern: ^(?!\\s*$).+")
        if instance.ping_status != "Online":
            raise ApiError("TargetNotConnected", f"{target} is not connected.")
        try:
            document = resolve_document(self._document(document_name),
                                        _parameters(params.get("Parameters")))
        except DocumentError as exc:
            raise ApiError(exc.code, str(exc)) from None
        record, token = self.registry.create_session(
            prefix="local-user", target=target, document_name=document_name, document=document,
            kms_key_id=self.config.session_kms_key_id, reason=params.get("Reason"),
            owner=self.config.caller_arn)
        return {"SessionId": record.session_id, "TokenValue": token,
                "StreamUrl": record.stream_url}

    def resume_session(self, params: dict[str, Any]) -> dict[str, Any]:
        session_id = str(params.get("SessionId", ""))
        self._deny("ssm:ResumeSession", self._arn("ssm", f"session/{session_id}"))
        record = self.registry.get(session_id)
        if record is None:
            raise ApiError("DoesNotExistException", f"Session {session_id} does not exist.")
        token = self.registry.resume(session_id)
        out: dict[str, Any] = {"SessionId": session_id}
        if token is not None:
            out.update({"TokenValue": token, "StreamUrl": record.stream_url})
        return out

    def terminate_session(self, params: dict[str, Any]) -> dict[str, Any]:
        session_id = str(params.get("SessionId", ""))
        self._deny("ssm:TerminateSession", self._arn("ssm", f"session/{session_id}"))
        self.registry.terminate(session_id)
        return {"SessionId": session_id}

    def describe_instance_information(self, params: dict[str, Any]) -> dict[str, Any]:
        self._deny("ssm:DescribeInstanceInformation", "*")
        instances = list(self.config.instances)
        filters = [(f.get("Key"), f.get("Values") or []) for f in params.get("Filters") or []]
        filters += [(f.get("key"), f.get("valueSet") or [])
                    for f in params.get("InstanceInformationFilterList") or []]
        for key, values in filters:
            instances = [i for i in instances if _ssm_filter(i, str(key), values)]
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults") or 50)
        page = instances[start:start + size]
        out: dict[str, Any] = {"InstanceInformationList": [_instance_info(i) for i in page]}
        if start + size < len(instances):
            out["NextToken"] = str(start + size)
        return out

    def describe_sessions(self, params: dict[str, Any]) -> dict[str, Any]:
        state = params.get("State", "Active")
        sessions = [r for r in self.registry.sessions.values()
                    if r.active == (state == "Active")]
        for f in params.get("Filters") or []:
            key, value = f.get("key"), f.get("value")
            if key == "Target":
                sessions = [r for r in sessions if r.target == value]
            elif key == "SessionId":
                sessions = [r for r in sessions if r.session_id == value]
            elif key == "Status":
                sessions = [r for r in sessions if r.status == value]
        return {"Sessions": [{
            "SessionId": r.session_id, "Target": r.target, "Status": r.status,
            "StartDate": r.start_date, **({"EndDate": r.end_date} if r.end_date else {}),
            "DocumentName": r.document_name, "Owner": r.owner,
            **({"Reason": r.reason} if r.reason else {})} for r in sessions]}

    def create_document(self, params: dict[str, Any]) -> dict[str, Any]:
        name = str(params.get("Name", ""))
        self._deny("ssm:CreateDocument", self._arn("ssm", f"document/{name}"))
        if params.get("DocumentType") != "Session":
            raise ApiError("InvalidDocumentType", "Only Session documents are supported "
                           "by the local Session Manager.")
        if name in self.config.documents or name in BUILTIN_DOCUMENTS:
            raise ApiError("DocumentAlreadyExists", "The specified document already exists.")
        try:
            content = json.loads(params.get("Content") or "")
            if not isinstance(content, dict) or "sessionType" not in content:
                raise ValueError
        except ValueError:
            raise ApiError("InvalidDocumentContent", "The content for the document is "
                           "not valid.") from None
        self.config.documents[name] = content
        return {"DocumentDescription": self._describe(name, content)}

    def describe_document(self, params: dict[str, Any]) -> dict[str, Any]:
        name = str(params.get("Name", ""))
        return {"Document": self._describe(name, self._document(name))}

    def _describe(self, name: str, content: dict[str, Any]) -> dict[str, Any]:
        return {"Name": name, "DocumentType": "Session", "Status": "Active",
                "DocumentFormat": "JSON", "SchemaVersion": str(content.get("schemaVersion",
                                                                           "1.0")),
                "Parameters": [{"Name": k, "Type": "String",
                                **({"DefaultValue": v["default"]} if isinstance(v, dict)
                                   and "default" in v else {})}
                               for k, v in (content.get("parameters") or {}).items()]}

    # ------------------------------------------------------------------ ECS

    def _cluster(self, name_or_arn: str | None) -> Any:
        cluster = self.config.cluster(name_or_arn or "default")
        if cluster is None:
            raise ApiError("ClusterNotFoundException", "Cluster not found.")
        return cluster

    def _task(self, cluster: str, task_ref: str) -> Task:
        task_id = task_ref.rsplit("/", 1)[-1]
        for task in self.config.tasks:
            if task.cluster == cluster and task.task_id == task_id:
                return task
        raise ApiError("InvalidParameterException", f"The specified task {task_ref} "
                       "does not exist." if task_ref else "Task must be specified.")

    def _task_json(self, task: Task) -> dict[str, Any]:
        arn = self._arn("ecs", f"task/{task.cluster}/{task.task_id}")
        return {
            "taskArn": arn,
            "clusterArn": self._arn("ecs", f"cluster/{task.cluster}"),
            "taskDefinitionArn": self._arn("ecs", f"task-definition/{task.family}:1"),
            "group": f"service:{task.service}" if task.service else f"family:{task.family}",
            "lastStatus": task.last_status, "desiredStatus": "RUNNING",
            "launchType": "FARGATE", "enableExecuteCommand": task.enable_execute_command,
            "containers": [{
                "containerArn": self._arn("ecs", f"container/{task.cluster}/{task.task_id}/"
                                                 f"{c.runtime_id[-10:]}"),
                "taskArn": arn, "name": c.name, "image": c.image, "runtimeId": c.runtime_id,
                "lastStatus": "RUNNING",
                "managedAgents": [{"name": "ExecuteCommandAgent",
                                   "lastStatus": c.managed_agent_status}]
                if task.enable_execute_command else [],
            } for c in task.containers],
        }

    def execute_command(self, params: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(params.get("cluster"))
        task = self._task(cluster.name, str(params.get("task", "")))
        task_arn = self._arn("ecs", f"task/{cluster.name}/{task.task_id}")
        self._deny("ecs:ExecuteCommand", task_arn)
        if params.get("interactive") is not True:
            raise ApiError("InvalidParameterException",
                           "Interactive is the only mode supported currently.")
        name = params.get("container")
        if name is None:
            if len(task.containers) != 1:
                raise ApiError("InvalidParameterException",
                               "Task has multiple containers. Specify a container name.")
            container = task.containers[0]
        else:
            found = [c for c in task.containers if c.name == name]
            if not found:
                raise ApiError("InvalidParameterException",
                               f"The container {name} does not exist in the task.")
            container = found[0]
        if not task.enable_execute_command or container.managed_agent_status != "RUNNING":
            raise ApiError("InvalidParameterException", EXEC_NOT_ENABLED)
        command = str(params.get("command") or "")
        if not command:
            raise ApiError("InvalidParameterException", "Command must be specified.")
        document = resolve_document(BUILTIN_DOCUMENTS["AWS-StartInteractiveCommand"],
                                    {"command": [command]})
        record, token = self.registry.create_session(
            prefix="ecs-execute-command", document_name="AmazonECS-ExecuteInteractiveCommand",
            target=f"ecs:{cluster.name}_{task.task_id}_{container.runtime_id}",
            document=document, kms_key_id=cluster.kms_key_id, owner=self.config.caller_arn)
        return {
            "clusterArn": self._arn("ecs", f"cluster/{cluster.name}"),
            "containerArn": self._arn("ecs", f"container/{cluster.name}/{task.task_id}/"
                                             f"{container.runtime_id[-10:]}"),
            "containerName": container.name, "interactive": True, "taskArn": task_arn,
            "session": {"sessionId": record.session_id, "streamUrl": record.stream_url,
                        "tokenValue": token},
        }

    def list_clusters(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"clusterArns": [self._arn("ecs", f"cluster/{c.name}")
                                for c in self.config.clusters]}

    def describe_clusters(self, params: dict[str, Any]) -> dict[str, Any]:
        found, failures = [], []
        for ref in params.get("clusters") or ["default"]:
            cluster = self.config.cluster(ref)
            if cluster is None:
                failures.append({"arn": ref, "reason": "MISSING"})
                continue
            item: dict[str, Any] = {
                "clusterArn": self._arn("ecs", f"cluster/{cluster.name}"),
                "clusterName": cluster.name, "status": "ACTIVE",
                "runningTasksCount": sum(1 for t in self.config.tasks
                                         if t.cluster == cluster.name),
                "activeServicesCount": len(cluster.services)}
            if cluster.kms_key_id:
                item["configuration"] = {"executeCommandConfiguration": {
                    "kmsKeyId": cluster.kms_key_id, "logging": "DEFAULT"}}
            found.append(item)
        return {"clusters": found, "failures": failures}

    def list_services(self, params: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(params.get("cluster"))
        return {"serviceArns": [self._arn("ecs", f"service/{cluster.name}/{s}")
                                for s in cluster.services]}

    def list_tasks(self, params: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(params.get("cluster"))
        service = params.get("serviceName")
        if service is not None:
            service = str(service).rsplit("/", 1)[-1]
            if service not in cluster.services:
                raise ApiError("ServiceNotFoundException", "Service not found.")
        family = params.get("family")
        tasks = [t for t in self.config.tasks if t.cluster == cluster.name
                 and (service is None or t.service == service)
                 and (family is None or t.family == family)]
        return {"taskArns": [self._arn("ecs", f"task/{cluster.name}/{t.task_id}")
                             for t in tasks]}

    def describe_tasks(self, params: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(params.get("cluster"))
        found, failures = [], []
        for ref in params.get("tasks") or []:
            try:
                found.append(self._task_json(self._task(cluster.name, str(ref))))
            except ApiError:
                failures.append({"arn": ref, "reason": "MISSING"})
        return {"tasks": found, "failures": failures}

    # ------------------------------------------------------------------ KMS

    def generate_data_key(self, params: dict[str, Any]) -> dict[str, Any]:
        key_id = str(params.get("KeyId", ""))
        self._deny("kms:GenerateDataKey", self._arn("kms", f"key/{key_id}"))
        size = params.get("NumberOfBytes")
        if size is None:
            size = {"AES_256": 32, "AES_128": 16}.get(str(params.get("KeySpec")), 0)
        try:
            plaintext, blob, arn = self.kms.generate_data_key(
                key_id, int(size), params.get("EncryptionContext"))
        except KmsError as exc:
            raise ApiError(exc.code, exc.message) from None
        return {"CiphertextBlob": base64.b64encode(blob).decode(),
                "Plaintext": base64.b64encode(plaintext).decode(), "KeyId": arn}

    def decrypt(self, params: dict[str, Any]) -> dict[str, Any]:
        self._deny("kms:Decrypt", self._arn("kms", "key/*"))
        try:
            blob = base64.b64decode(str(params.get("CiphertextBlob", "")), validate=True)
            plaintext = self.kms.decrypt(blob, params.get("EncryptionContext"),
                                         params.get("KeyId"))
        except ValueError:
            raise ApiError("InvalidCiphertextException", "") from None
        except KmsError as exc:
            raise ApiError(exc.code, exc.message) from None
        return {"Plaintext": base64.b64encode(plaintext).decode(),
                "KeyId": self._arn("kms", "key/" + blob[1:37].decode().strip()),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}

    # ------------------------------------------------------------------ EC2 (query protocol)

    def _ec2(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}
        if form.get("Action") != "DescribeInstances":
            raise ApiError("InvalidAction", f"The action {form.get('Action')} is not valid "
                           "for this web service.")
        self._deny("ec2:DescribeInstances", "*")
        ids = [v for k, v in form.items() if k.startswith("InstanceId.")]
        filters: dict[str, list[str]] = {}
        for key, value in form.items():
            m = re.match(r"^Filter\.(\d+)\.Name$", key)
            if m:
                n = m.group(1)
                filters[value] = [v for k, v in form.items()
                                  if k.startswith(f"Filter.{n}.Value.")]
        instances = [i for i in self.config.instances if i.instance_id.startswith("i-")]
        if ids:
            unknown = [i for i in ids if self.config.instance(i) is None]
            if unknown:
                raise ApiError("InvalidInstanceID.NotFound",
                               f"The instance ID '{unknown[0]}' does not exist")
            instances = [i for i in instances if i.instance_id in ids]
        for name, values in filters.items():
            instances = [i for i in instances if _ec2_filter(i, name, values)]
        items = "".join(_ec2_instance_xml(i) for i in instances)
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
                f"<requestId>{secrets.token_hex(8)}</requestId><reservationSet>"
                + (f"<item><reservationId>r-0123456789abcdef0</reservationId>"
                   f"<ownerId>{self.config.account_id}</ownerId>"
                   f"<instancesSet>{items}</instancesSet></item>" if items else "")
                + "</reservationSet></DescribeInstancesResponse>")
        return Response(200, body.encode(), {"Content-Type": "text/xml;charset=UTF-8"})

    def _ec2_error(self, exc: ApiError) -> Response:
        code = {"AccessDeniedException": "UnauthorizedOperation",
                "ThrottlingException": "RequestLimitExceeded"}.get(exc.code, exc.code)
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                f"<Code>{escape(code)}</Code><Message>{escape(exc.message)}</Message>"
                f"</Error></Errors><RequestID>{secrets.token_hex(8)}</RequestID></Response>")
        return Response(exc.status if exc.status != 400 else 400, body.encode(),
                        {"Content-Type": "text/xml;charset=UTF-8"})


def _parameters(raw: Any) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        return {}
    return {str(k): [str(x) for x in (v if isinstance(v, list) else [v])]
            for k, v in raw.items()}


def _instance_info(i: Instance) -> dict[str, Any]:
    return {"InstanceId": i.instance_id, "PingStatus": i.ping_status,
            "LastPingDateTime": time.time(), "AgentVersion": i.agent_version,
            "IsLatestVersion": True, "PlatformType": i.platform_type,
            "PlatformName": i.platform_name, "ResourceType":
                "ManagedInstance" if i.instance_id.startswith("mi-") else "EC2Instance",
            "IPAddress": i.private_ip, "ComputerName": i.private_dns or i.instance_id,
            **({"Name": i.name} if i.name and i.instance_id.startswith("mi-") else {})}


def _ssm_filter(i: Instance, key: str, values: list[str]) -> bool:
    if key in ("InstanceIds", "InstanceId"):
        return i.instance_id in values
    if key == "PingStatus":
        return i.ping_status in values
    if key == "PlatformTypes":
        return i.platform_type in values
    if key == "ResourceType":
        return ("ManagedInstance" if i.instance_id.startswith("mi-") else "EC2Instance") \
            in values
    if key == "tag:Name":
        return i.name in values
    return True


def _ec2_filter(i: Instance, name: str, values: list[str]) -> bool:
    import fnmatch

    field = {"tag:Name": i.name, "private-ip-address": i.private_ip,
             "ip-address": i.public_ip, "private-dns-name": i.private_dns,
             "dns-name": i.public_dns, "instance-id": i.instance_id,
             "instance-state-name": "running"}.get(name, "")
    return any(fnmatch.fnmatchcase(field or "", v) for v in values) if field is not None \
        else False


def _ec2_instance_xml(i: Instance) -> str:
    tags = (f"<tagSet><item><key>Name</key><value>{escape(i.name)}</value></item></tagSet>"
            if i.name else "")
    public = (f"<ipAddress>{i.public_ip}</ipAddress>" if i.public_ip else "")
    return (f"<item><instanceId>{i.instance_id}</instanceId>"
            "<instanceState><code>16</code><name>running</name></instanceState>"
            f"<privateDnsName>{escape(i.private_dns or '')}</privateDnsName>"
            f"<dnsName>{escape(i.public_dns or '')}</dnsName>"
            f"<privateIpAddress>{i.private_ip}</privateIpAddress>{public}"
            f"<platformDetails>Linux/UNIX</platformDetails>{tags}</item>")
