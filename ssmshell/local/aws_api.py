"""Local AWS endpoints: SSM, ECS and KMS (JSON 1.1) and EC2 DescribeInstances (query/XML).

One HTTP server answers for all four services, so ``--endpoint-url`` /
``AWS_ENDPOINT_URL`` is a single URL. JSON requests are dispatched on
``X-Amz-Target``; EC2 uses the query protocol (form-encoded ``Action=…``) and
answers XML. Every request must carry a SigV4 ``Authorization`` header of the
right shape, scoped to the right region and service (the signature itself is
not verified). Errors have the shapes, codes and wording of the real services
(PROTOCOL.md §2; §15 item 1).

Fault knobs for tests: :attr:`AwsEndpoints.throttle_next`,
``config.denied_actions`` and :attr:`LocalKms.fail_decrypt`.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from ssmshell.local.config import (
    BUILTIN_DOCUMENTS,
    INSTANCE_ID_PATTERN,
    Cluster,
    Container,
    DocumentError,
    Instance,
    LocalConfig,
    Task,
    ecs_target,
    resolve_document,
    validate_document_content,
)
from ssmshell.local.httpserver import HttpServer, Request, Response
from ssmshell.local.kms import KEY_SPECS, KmsError, LocalKms
from ssmshell.local.registry import ECS_SESSION_PREFIX, Registry, SessionRecord

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
XML_CONTENT_TYPE = "text/xml;charset=UTF-8"
EC2_NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
DEFAULT_DOCUMENT = "SSM-SessionManagerRunShell"
ECS_DOCUMENT = "AmazonECS-ExecuteInteractiveCommand"
#: ECS's wording when exec is off for the task or its agent is not running.
EXEC_NOT_ENABLED = (
    "The execute command failed because execute command was not enabled when the task "
    "was run or the execute command agent isn’t running. Wait and try the command again "
    "or run a new task with execute command enabled and try again.")

#: X-Amz-Target prefix → SigV4 service name.
_JSON_SERVICES = {"AmazonSSM": "ssm", "AmazonEC2ContainerServiceV20141113": "ecs",
                  "TrentService": "kms"}
_ECS_TARGET = re.compile(r"^ecs:(.+)_([0-9a-f]{32})_(.+)$")
_DOCUMENT_NAME = re.compile(r"^[a-zA-Z0-9_.-]{3,128}$")
_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
_EC2_STATES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48,
               "stopping": 64, "stopped": 80}
_EC2_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")

T = TypeVar("T")
Params = dict[str, Any]


class ApiError(Exception):
    """An AWS error response: ``code`` (``__type``), ``message`` and HTTP ``status``."""

    def __init__(self, code: str, message: str = "", status: int = 400) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class AwsEndpoints:
    """The local AWS JSON and query endpoints on one HTTP server.

    Args:
        config: the fake world (read live: tests may change it while serving).
        registry: sessions and tokens, shared with the gateway.
        kms: the local KMS, shared with the agent emulator.

    Attributes:
        throttle_next: fault knob — the next N requests fail with ThrottlingException
            (EC2: RequestLimitExceeded).
        requests: ``"<Target>"`` (e.g. ``AmazonSSM.StartSession``, ``EC2.DescribeInstances``)
            of every authenticated request, in order.
    """

    def __init__(self, config: LocalConfig, registry: Registry, kms: LocalKms) -> None:
        self.config = config
        self.registry = registry
        self.kms = kms
        self.throttle_next = 0
        self.requests: list[str] = []
        self._http = HttpServer(self._handle)
        self._started = time.time()
        self._document_meta: dict[str, tuple[float, str]] = {}  # name → (created, raw JSON)
        ssm, ecs, kms_ = "AmazonSSM.", "AmazonEC2ContainerServiceV20141113.", "TrentService."
        self._ops: dict[str, Callable[[Params], Params]] = {
            ssm + "StartSession": self.start_session,
            ssm + "ResumeSession": self.resume_session,
            ssm + "TerminateSession": self.terminate_session,
            ssm + "DescribeInstanceInformation": self.describe_instance_information,
            ssm + "DescribeSessions": self.describe_sessions,
            ssm + "CreateDocument": self.create_document,
            ssm + "DescribeDocument": self.describe_document,
            ssm + "GetDocument": self.get_document,
            ecs + "ExecuteCommand": self.execute_command,
            ecs + "ListClusters": self.list_clusters,
            ecs + "DescribeClusters": self.describe_clusters,
            ecs + "ListServices": self.list_services,
            ecs + "ListTasks": self.list_tasks,
            ecs + "DescribeTasks": self.describe_tasks,
            kms_ + "GenerateDataKey": self.generate_data_key,
            kms_ + "Decrypt": self.decrypt,
            kms_ + "DescribeKey": self.describe_key,
        }

    # ------------------------------------------------------------------ lifecycle

    @property
    def host(self) -> str:
        """The address listened on."""
        return self._http.host

    @property
    def port(self) -> int:
        """The bound port (0 before :meth:`start`)."""
        return self._http.port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, for ``endpoint_url`` / ``AWS_ENDPOINT_URL``."""
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 = any free port).

        Returns:
            The bound port.
        """
        return await self._http.start(host, port)

    async def close(self) -> None:
        """Stop listening and close every client connection."""
        await self._http.close()

    # ------------------------------------------------------------------ HTTP + auth

    async def _handle(self, request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        service = _JSON_SERVICES.get(target.split(".", 1)[0]) if target else "ec2"
        try:
            self._check_signature(request, service)
            if service == "ec2":
                return self._ec2(request)
            self.requests.append(target)
            self._maybe_throttle()
            op = self._ops.get(target)
            if op is None:
                raise ApiError("UnknownOperationException")
            params = self._json_body(request)
            if target.split(".", 1)[1] not in _SELF_AUTHORIZED:
                self._authorize(f"{service}:{target.split('.', 1)[1]}",
                                self.config.arn(str(service), "*"))
            return self._json_response(200, op(params))
        except ApiError as exc:
            if service == "ec2":
                return self._ec2_error(exc)
            body: Params = {"__type": exc.code}
            if exc.message:
                body["message"] = exc.message
            return self._json_response(exc.status, body)

    @staticmethod
    def _json_response(status: int, body: Params) -> Response:
        return Response(status, json.dumps(body).encode(),
                        {"Content-Type": JSON_CONTENT_TYPE, "x-amzn-RequestId": str(uuid.uuid4())})

    @staticmethod
    def _json_body(request: Request) -> Params:
        if not request.body.strip():
            return {}
        try:
            params = json.loads(request.body)
        except ValueError:
            raise ApiError("SerializationException", "Start of structure or map found where "
                           "not expected.") from None
        if params is None:
            return {}
        if not isinstance(params, dict):
            raise ApiError("SerializationException", "Start of structure or map expected.")
        return params

    def _maybe_throttle(self) -> None:
        if self.throttle_next > 0:
            self.throttle_next -= 1
            raise ApiError("ThrottlingException", "Rate exceeded")

    def _check_signature(self, request: Request, service: str | None) -> None:
        """Require a well-formed SigV4 Authorization header (not verified cryptographically).

        Messages never echo the header: it names the access key.
        """
        header = request.headers.get("authorization", "")
        if not header:
            raise ApiError("MissingAuthenticationTokenException", "Missing Authentication Token",
                           403)
        scheme, _, rest = header.partition(" ")
        if scheme != "AWS4-HMAC-SHA256":
            raise ApiError("IncompleteSignatureException", "Unsupported Authorization Type",
                           403)
        pairs: dict[str, str] = {}
        for element in rest.split(","):
            element = element.strip()
            if not element:
                continue
            name, sep, value = element.partition("=")
            if not sep:
                raise ApiError("IncompleteSignatureException", "An element of the "
                               "Authorization header is not a valid key=value pair (missing "
                               "equal-sign).", 403)
            pairs[name.strip()] = value.strip()
        amz_date = request.headers.get("x-amz-date", "")
        problems = [f"Authorization header requires '{name}' parameter."
                    for name in ("Credential", "Signature", "SignedHeaders")
                    if not pairs.get(name)]
        if not amz_date and not request.headers.get("date"):
            problems.append("Authorization header requires existence of either a "
                            "'X-Amz-Date' or a 'Date' header.")
        if problems:
            raise ApiError("IncompleteSignatureException", " ".join(problems), 403)
        scope = pairs["Credential"].split("/")
        if len(scope) != 5:
            raise ApiError("IncompleteSignatureException", "Credential must have exactly 5 "
                           "slash-delimited elements, e.g. keyid/date/region/service/term.",
                           403)
        _akid, date, region, scope_service, terminator = scope
        if terminator != "aws4_request":
            raise ApiError("IncompleteSignatureException", "Credential should be scoped with a "
                           f"valid terminator: 'aws4_request', not '{terminator[:20]}'.", 403)
        if not _SIGNATURE.match(pairs["Signature"]):
            raise ApiError("IncompleteSignatureException", "Signature must be 64 lower-case "
                           "hexadecimal characters.", 403)
        signed = pairs["SignedHeaders"].split(";")
        if "host" not in signed:
            raise ApiError("IncompleteSignatureException", "'Host' must be a 'SignedHeader' in "
                           "the AWS Authorization.", 403)
        if amz_date:
            if not _AMZ_DATE.match(amz_date):
                raise ApiError("IncompleteSignatureException", "Date must be in ISO-8601 "
                               f"'basic format'. Got '{amz_date[:32]}'. See "
                               "http://en.wikipedia.org/wiki/ISO_8601", 403)
            if amz_date[:8] != date:
                raise ApiError("InvalidSignatureException", "Date in Credential scope does not "
                               f"match YYYYMMDD from ISO-8601 version of date from HTTP: "
                               f"'{date[:8]}' != '{amz_date[:8]}', from '{amz_date}'.", 403)
        if region != self.config.region:
            raise ApiError("InvalidSignatureException", "Credential should be scoped to a "
                           f"valid region, not '{region[:32]}'. ", 403)
        if service is not None and scope_service != service:
            raise ApiError("InvalidSignatureException", "Credential should be scoped to "
                           f"correct service: '{service}'. ", 403)

    def _authorize(self, action: str, resource: str) -> None:
        """AccessDeniedException if ``action`` is in ``config.denied_actions``."""
        if action in self.config.denied_actions:
            raise ApiError(
                "AccessDeniedException",
                f"User: {self.config.caller_arn} is not authorized to perform: {action} on "
                f"resource: {resource} because no identity-based policy allows the "
                f"{action} action")

    # ------------------------------------------------------------------ parameter helpers

    @staticmethod
    def _required(params: Params, name: str, code: str = "ValidationException") -> str:
        value = params.get(name)
        if not isinstance(value, str) or not value:
            if code == "ValidationException":
                member = name[:1].lower() + name[1:]
                raise ApiError(code, "1 validation error detected: Value null at "
                               f"'{member}' failed to satisfy constraint: Member must not be "
                               "null")
            raise ApiError(code, f"{name} can not be blank.")
        return value

    @staticmethod
    def _page(items: Sequence[T], params: Params, *, token_key: str, max_key: str,
              limits: tuple[int, int], default: int, bad_token: ApiError,
              bad_max: Callable[[int], ApiError]) -> tuple[list[T], str | None]:
        """One page of ``items`` and the next token (opaque base64 of an offset)."""
        raw_max = params.get(max_key)
        size = default
        if raw_max is not None:
            if not isinstance(raw_max, int) or isinstance(raw_max, bool) or not (
                    limits[0] <= raw_max <= limits[1]):
                raise bad_max(raw_max if isinstance(raw_max, int) else -1)
            size = raw_max
        offset = 0
        token = params.get(token_key)
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(str(token).encode()))
                offset = int(decoded["offset"])
                if offset < 0 or offset > len(items):
                    raise ValueError
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise bad_token from None
        page = list(items[offset:offset + size])
        end = offset + size
        next_token = (base64.urlsafe_b64encode(json.dumps({"offset": end}).encode()).decode()
                      if end < len(items) else None)
        return page, next_token

    @staticmethod
    def _parameters(raw: Any) -> dict[str, list[str]]:
        if raw is None:
            return {}
        if not isinstance(raw, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in raw.values()):
            raise ApiError("ValidationException", "1 validation error detected: Value at "
                           "'parameters' failed to satisfy constraint: Map value must be a "
                           "list of strings")
        return {str(k): list(v) for k, v in raw.items()}

    # ------------------------------------------------------------------ SSM sessions

    def _session_target(self, target: str) -> tuple[str, str, str]:
        """Check a StartSession target: ``(resource ARN, platform type, agent target)``.

        Raises:
            ApiError: InvalidTarget (unknown) or TargetNotConnected (offline).
        """
        not_connected = ApiError("TargetNotConnected", f"{target} is not connected.")
        invalid = ApiError("InvalidTarget", f"{target} is not a valid target. It doesn't "
                           "exist or it isn't configured for Systems Manager.")
        if INSTANCE_ID_PATTERN.match(target):
            instance = self.config.instance(target)
            if instance is None:
                raise invalid
            if instance.ping_status != "Online" or instance.state != "running":
                raise not_connected
            return self.config.instance_arn(target), instance.platform_type, target
        match = _ECS_TARGET.match(target)
        if match is not None:
            cluster, task_id, runtime_id = match.groups()
            task = self.config.task(cluster, task_id)
            container = next((c for c in task.containers if c.runtime_id == runtime_id),
                             None) if task else None
            if task is None or container is None:
                raise invalid
            if (task.last_status != "RUNNING" or not task.enable_execute_command
                    or container.managed_agent_status != "RUNNING"):
                raise not_connected
            return self.config.task_arn(task), "Linux", target
        raise invalid

    def _session_document(self, name: str) -> dict[str, Any]:
        content = self.config.document(name.rsplit("/", 1)[-1] if name.startswith("arn:")
                                       else name)
        if content is None:
            raise ApiError("InvalidDocument", f"Document {name} does not exist in your "
                           "account.")
        return content

    def start_session(self, params: Params) -> Params:
        """ssm:StartSession (§2.1) → ``{SessionId, TokenValue, StreamUrl}``."""
        target = self._required(params, "Target")
        name = params.get("DocumentName") or DEFAULT_DOCUMENT
        if not isinstance(name, str):
            raise ApiError("ValidationException", "DocumentName must be a string.")
        parameters = self._parameters(params.get("Parameters"))
        reason = params.get("Reason")
        resource = (self.config.instance_arn(target) if not target.startswith("ecs:")
                    else self.config.arn("ecs", "task/" + target[4:].replace("_", "/", 1)))
        self._authorize("ssm:StartSession", resource)
        content = self._session_document(name)
        _, platform, agent_target = self._session_target(target)
        try:
            document = resolve_document(content, parameters, platform)
        except DocumentError as exc:
            raise ApiError(exc.code, exc.message) from None
        kms_key_id = None
        if document.session_type != "Port":
            kms_key_id = document.kms_key_id or self.config.session_kms_key_id
        record, token = self.registry.create_session(
            target=agent_target, document_name=name.rsplit("/", 1)[-1],
            session_type=document.session_type, id_prefix=self.config.user_name,
            properties=document.properties, command=document.command,
            separate_output_stream=document.separate_output_stream,
            stdout_prefix=document.stdout_prefix, stderr_prefix=document.stderr_prefix,
            kms_key_id=kms_key_id, reason=str(reason) if reason else None,
            owner=self.config.caller_arn)
        return {"SessionId": record.session_id, "TokenValue": token,
                "StreamUrl": record.stream_url}

    def _session_arn(self, session_id: str) -> str:
        return self.config.arn("ssm", f"session/{session_id}")

    def resume_session(self, params: Params) -> Params:
        """ssm:ResumeSession (§2.4): a new token, or none when the session has ended."""
        session_id = self._required(params, "SessionId")
        self._authorize("ssm:ResumeSession", self._session_arn(session_id))
        record = self.registry.get(session_id)
        if record is None:
            raise ApiError("DoesNotExistException", f"Session with id {session_id} does not "
                           "exist.")
        token = self.registry.resume(session_id)
        out: Params = {"SessionId": session_id, "StreamUrl": record.stream_url}
        if token is not None:
            out["TokenValue"] = token
        return out

    def terminate_session(self, params: Params) -> Params:
        """ssm:TerminateSession (§2.5); succeeds for unknown and ended sessions too."""
        session_id = self._required(params, "SessionId")
        self._authorize("ssm:TerminateSession", self._session_arn(session_id))
        self.registry.terminate(session_id)
        return {"SessionId": session_id}

    def describe_sessions(self, params: Params) -> Params:
        """ssm:DescribeSessions: ``State`` Active|History, ``Filters`` [{key, value}]."""
        state = params.get("State")
        if state not in ("Active", "History"):
            raise ApiError("ValidationException", "1 validation error detected: Value "
                           f"'{state}' at 'state' failed to satisfy constraint: Member must "
                           "satisfy enum value set: [Active, History]")
        records = self.registry.sessions(state)
        for item in params.get("Filters") or []:
            key, value = (item.get("key"), item.get("value")) if isinstance(item, dict) \
                else (None, None)
            if not isinstance(value, str) or not value:
                raise ApiError("ValidationException", "Filter value must not be empty.")
            records = [r for r in records if self._session_matches(r, str(key), value)]
        records.sort(key=lambda r: r.start_date, reverse=True)
        page, token = self._page(
            records, params, token_key="NextToken", max_key="MaxResults", limits=(1, 200),
            default=20, bad_token=ApiError("InvalidNextToken", "The specified token isn't "
                                           "valid."),
            bad_max=lambda n: ApiError("ValidationException", "1 validation error detected: "
                                       f"Value '{n}' at 'maxResults' failed to satisfy "
                                       "constraint: Member must have value less than or "
                                       "equal to 200"))
        out: Params = {"Sessions": [self._session_json(r) for r in page]}
        if token:
            out["NextToken"] = token
        return out

    @staticmethod
    def _session_matches(record: SessionRecord, key: str, value: str) -> bool:
        if key in ("InvokedAfter", "InvokedBefore"):
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ApiError("ValidationException", f"Invalid date for {key}: "
                               f"{value[:40]}") from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            return record.start_date >= when if key == "InvokedAfter" \
                else record.start_date <= when
        if key == "Target":
            return record.target == value
        if key == "Owner":
            return record.owner == value
        if key == "Status":
            return record.status == value
        if key == "SessionId":
            return record.session_id == value
        if key == "AccessType":
            return value == "Standard"
        raise ApiError("InvalidFilterKey", "The specified key is not valid.")

    @staticmethod
    def _session_json(record: SessionRecord) -> Params:
        out: Params = {"SessionId": record.session_id, "Target": record.target,
                       "Status": record.status, "StartDate": _epoch(record.start_date),
                       "DocumentName": record.document_name, "Owner": record.owner,
                       "OutputUrl": {}, "MaxSessionDuration": "",
                       "AccessType": "Standard"}
        if record.end_date is not None:
            out["EndDate"] = _epoch(record.end_date)
        if record.reason:
            out["Reason"] = record.reason
        return out

    # ------------------------------------------------------------------ SSM instances

    def describe_instance_information(self, params: Params) -> Params:
        """ssm:DescribeInstanceInformation with Filters / InstanceInformationFilterList."""
        conditions: list[tuple[str, list[str]]] = []
        for item in params.get("Filters") or []:
            conditions.append(self._instance_filter(item, "Key", "Values", tags=True))
        for item in params.get("InstanceInformationFilterList") or []:
            conditions.append(self._instance_filter(item, "key", "valueSet", tags=False))
        instances = [i for i in self.config.instances
                     if all(_instance_matches(i, k, v) for k, v in conditions)]
        page, token = self._page(
            instances, params, token_key="NextToken", max_key="MaxResults", limits=(5, 50),
            default=50, bad_token=ApiError("InvalidNextToken", "The specified token isn't "
                                           "valid."),
            bad_max=lambda n: ApiError("ValidationException", "1 validation error detected: "
                                       f"Value '{n}' at 'maxResults' failed to satisfy "
                                       "constraint: Member must have value between 5 and 50"))
        out: Params = {"InstanceInformationList": [self._instance_info(i) for i in page]}
        if token:
            out["NextToken"] = token
        return out

    @staticmethod
    def _instance_filter(item: Any, key_name: str, values_name: str,
                         tags: bool) -> tuple[str, list[str]]:
        if not isinstance(item, dict):
            raise ApiError("InvalidFilterKey", "The specified key is not valid.")
        key, values = item.get(key_name), item.get(values_name)
        known = _INSTANCE_FILTER_KEYS | ({"tag-key"} if tags else set())
        if not isinstance(key, str) or not (key in known or (tags and key.startswith("tag:"))):
            raise ApiError("InvalidFilterKey", "The specified key is not valid.")
        if (not isinstance(values, list) or not values
                or not all(isinstance(v, str) and v for v in values)):
            raise ApiError("InvalidInstanceInformationFilterValue",
                           f"The specified filter value for {key} is not valid.")
        if key == "InstanceIds":
            bad = [v for v in values if not INSTANCE_ID_PATTERN.match(v)]
            if bad:
                raise ApiError("InvalidInstanceId", f"Invalid instance id(s): {bad[0][:40]}")
        return key, list(values)

    def _instance_info(self, instance: Instance) -> Params:
        now = time.time()
        info: Params = {
            "InstanceId": instance.instance_id, "PingStatus": instance.ping_status,
            "LastPingDateTime": now if instance.ping_status == "Online" else self._started,
            "AgentVersion": instance.agent_version,
            "IsLatestVersion": instance.agent_version == self.config.agent_version,
            "PlatformType": instance.platform_type, "PlatformName": instance.platform_name,
            "PlatformVersion": "2023" if instance.platform_name == "Amazon Linux" else "22.04",
            "ResourceType": "ManagedInstance" if instance.is_managed_instance
            else "EC2Instance",
            "IPAddress": instance.private_ip, "ComputerName": instance.private_dns,
            "SourceId": instance.instance_id,
            "SourceType": "AWS::SSM::ManagedInstance" if instance.is_managed_instance
            else "AWS::EC2::Instance",
        }
        if instance.is_managed_instance:
            info.update({"Name": instance.name or "", "RegistrationDate": self._started,
                         "ActivationId": str(uuid.uuid5(uuid.NAMESPACE_OID,
                                                        instance.instance_id)),
                         "IamRole": "SSMServiceRole"})
        return info

    # ------------------------------------------------------------------ SSM documents

    def _document_description(self, name: str, content: dict[str, Any]) -> Params:
        created, raw = self._document_meta.get(
            name, (self._started, json.dumps(content, sort_keys=True)))
        parameters = []
        for pname, spec in (content.get("parameters") or {}).items():
            entry: Params = {"Name": pname, "Type": spec.get("type", "String"),
                             "Description": spec.get("description", "")}
            if "default" in spec:
                default = spec["default"]
                entry["DefaultValue"] = default if isinstance(default, str) \
                    else json.dumps(default)
            parameters.append(entry)
        aws_owned = name in BUILTIN_DOCUMENTS and name.startswith(("AWS-", "Amazon"))
        return {
            "Hash": hashlib.sha256(raw.encode()).hexdigest(), "HashType": "Sha256",
            "Name": name, "Owner": "Amazon" if aws_owned else self.config.account_id,
            "CreatedDate": created, "Status": "Active", "DocumentVersion": "1",
            "Description": str(content.get("description", "")), "Parameters": parameters,
            "PlatformTypes": ["Windows", "Linux", "MacOS"], "DocumentType": "Session",
            "SchemaVersion": str(content.get("schemaVersion", "1.0")),
            "LatestVersion": "1", "DefaultVersion": "1", "DocumentFormat": "JSON", "Tags": [],
        }

    def _document_name(self, params: Params) -> str:
        name = self._required(params, "Name")
        if name.startswith("arn:"):
            name = name.rsplit("/", 1)[-1]
        return name

    def create_document(self, params: Params) -> Params:
        """ssm:CreateDocument for Session documents (JSON content)."""
        name = self._document_name(params)
        raw = self._required(params, "Content")
        self._authorize("ssm:CreateDocument", self.config.arn("ssm", f"document/{name}"))
        if not _DOCUMENT_NAME.match(name):
            raise ApiError("ValidationException", "1 validation error detected: Value "
                           f"'{name[:128]}' at 'name' failed to satisfy constraint: Member "
                           "must satisfy regular expression pattern: ^[a-zA-Z0-9_\\-.]{3,128}$")
        if name.lower().startswith(("aws", "amazon", "amzn")):
            raise ApiError("ValidationException", "Document names can't start with the "
                           "reserved prefixes aws, amazon or amzn.")
        document_type = params.get("DocumentType") or "Command"
        if document_type != "Session":
            raise ApiError("InvalidDocumentContent", "The local Session Manager stores only "
                           "documents of type Session.")
        if (params.get("DocumentFormat") or "JSON") != "JSON":
            raise ApiError("InvalidDocumentContent", "The local Session Manager reads only "
                           "JSON documents.")
        if self.config.document(name) is not None:
            raise ApiError("DocumentAlreadyExists", f"Document with same name {name} already "
                           "exists")
        try:
            content = json.loads(raw)
        except ValueError:
            raise ApiError("InvalidDocumentContent", "The content for the document is not "
                           "valid JSON.") from None
        try:
            validate_document_content(content)
        except DocumentError as exc:
            raise ApiError(exc.code, exc.message) from None
        self.config.documents[name] = content
        self._document_meta[name] = (time.time(), raw)
        return {"DocumentDescription": self._document_description(name, content)}

    def _find_document(self, params: Params, action: str) -> tuple[str, dict[str, Any]]:
        name = self._document_name(params)
        self._authorize(action, self.config.arn("ssm", f"document/{name}"))
        content = self._session_document(name)
        version = params.get("DocumentVersion")
        if version not in (None, "1", "$LATEST", "$DEFAULT"):
            raise ApiError("InvalidDocumentVersion", "The document version is not valid or "
                           "does not exist.")
        return name, content

    def describe_document(self, params: Params) -> Params:
        """ssm:DescribeDocument."""
        name, content = self._find_document(params, "ssm:DescribeDocument")
        return {"Document": self._document_description(name, content)}

    def get_document(self, params: Params) -> Params:
        """ssm:GetDocument (the content as JSON text)."""
        name, content = self._find_document(params, "ssm:GetDocument")
        raw = self._document_meta.get(name, (0.0, json.dumps(content, indent=2)))[1]
        return {"Name": name, "CreatedDate": self._document_meta.get(
                    name, (self._started, ""))[0],
                "DocumentVersion": "1", "Status": "Active", "Content": raw,
                "DocumentType": "Session", "DocumentFormat": "JSON"}

    # ------------------------------------------------------------------ ECS

    def _cluster(self, ref: Any) -> Cluster:
        cluster = self.config.cluster(ref if isinstance(ref, str) and ref else "default")
        if cluster is None:
            raise ApiError("ClusterNotFoundException", "Cluster not found.")
        return cluster

    def _container_arn(self, task: Task, container: Container) -> str:
        suffix = uuid.uuid5(uuid.NAMESPACE_URL, container.runtime_id)
        return self.config.arn("ecs", f"container/{task.cluster}/{task.task_id}/{suffix}")

    @staticmethod
    def _task_id(ref: str) -> str:
        return ref.rsplit("/", 1)[-1]

    def _find_task(self, cluster: Cluster, ref: str) -> Task | None:
        if ref.startswith("arn:"):
            parts = ref.split(":", 5)[-1].split("/")
            if len(parts) == 3 and parts[1] != cluster.name:
                return None
        return self.config.task(cluster.name, self._task_id(ref))

    def _task_json(self, task: Task, include_tags: bool = False) -> Params:
        arn = self.config.task_arn(task)
        stopped = task.last_status == "STOPPED"
        created = self._started - 3600
        containers = []
        for c in task.containers:
            item: Params = {
                "containerArn": self._container_arn(task, c), "taskArn": arn, "name": c.name,
                "image": c.image, "runtimeId": c.runtime_id,
                "lastStatus": "STOPPED" if stopped else task.last_status,
                "networkInterfaces": [], "healthStatus": "UNKNOWN", "cpu": "0"}
            if task.enable_execute_command:
                item["managedAgents"] = [{"lastStartedAt": created + 5,
                                          "name": "ExecuteCommandAgent",
                                          "lastStatus": c.managed_agent_status}]
            containers.append(item)
        out: Params = {
            "attachments": [], "availabilityZone": f"{self.config.region}a",
            "clusterArn": self.config.cluster_arn(task.cluster),
            "connectivity": "CONNECTED", "containers": containers, "cpu": "256",
            "createdAt": created, "desiredStatus": "STOPPED" if stopped else "RUNNING",
            "enableExecuteCommand": task.enable_execute_command,
            "group": f"service:{task.service}" if task.service else f"family:{task.family}",
            "healthStatus": "UNKNOWN", "lastStatus": task.last_status,
            "launchType": "FARGATE", "memory": "512",
            "overrides": {"containerOverrides": [{"name": c.name} for c in task.containers],
                          "inferenceAcceleratorOverrides": []},
            "platformVersion": "1.4.0", "platformFamily": "Linux", "startedAt": created + 2,
            "taskArn": arn, "version": 2,
            "taskDefinitionArn": self.config.arn("ecs", f"task-definition/{task.family}:1"),
        }
        if task.service:
            out["startedBy"] = "ecs-svc/" + hashlib.sha256(
                f"{task.cluster}/{task.service}".encode()).hexdigest()[:19]
        if include_tags:
            out["tags"] = []
        return out

    def execute_command(self, params: Params) -> Params:
        """ecs:ExecuteCommand (§2.2): an InteractiveCommands session in a container."""
        task_ref = self._required(params, "task", "InvalidParameterException")
        command = self._required(params, "command", "InvalidParameterException")
        if params.get("interactive") is not True:
            raise ApiError("InvalidParameterException",
                           "Interactive is the only mode supported currently.")
        cluster = self._cluster(params.get("cluster"))
        task_id = self._task_id(task_ref)
        if len(task_id) not in (32, 36):
            raise ApiError("InvalidParameterException", "task length should be one of [32,36]")
        self._authorize("ecs:ExecuteCommand",
                        self.config.arn("ecs", f"task/{cluster.name}/{task_id}"))
        task = self._find_task(cluster, task_ref)
        if task is None:
            raise ApiError("InvalidParameterException", "The specified task was not found. "
                           "Specify a valid task and try again.")
        if task.last_status != "RUNNING":
            raise ApiError("InvalidParameterException", "The specified task is not running. "
                           "Specify a running task and try again.")
        name = params.get("container")
        if name:
            container = task.container(str(name))
            if container is None:
                raise ApiError("InvalidParameterException", f"The container {name} does not "
                               "exist in the task. Specify a valid container name and try "
                               "again.")
        elif len(task.containers) != 1:
            raise ApiError("InvalidParameterException", f"Task '{task.task_id}' has multiple "
                           "containers. Specify a container name.")
        else:
            container = task.containers[0]
        if not task.enable_execute_command or container.managed_agent_status != "RUNNING":
            raise ApiError("InvalidParameterException", EXEC_NOT_ENABLED)
        record, token = self.registry.create_session(
            target=ecs_target(cluster.name, task.task_id, container.runtime_id),
            document_name=ECS_DOCUMENT, session_type="InteractiveCommands",
            id_prefix=ECS_SESSION_PREFIX, command=command, kms_key_id=cluster.kms_key_id,
            owner=self.config.caller_arn)
        return {
            "clusterArn": self.config.cluster_arn(cluster.name),
            "containerArn": self._container_arn(task, container),
            "containerName": container.name, "interactive": True,
            "taskArn": self.config.task_arn(task),
            "session": {"sessionId": record.session_id, "streamUrl": record.stream_url,
                        "tokenValue": token},
        }

    def _ecs_page(self, items: Sequence[str], params: Params, key: str) -> Params:
        page, token = self._page(
            items, params, token_key="nextToken", max_key="maxResults", limits=(1, 100),
            default=100, bad_token=ApiError("InvalidParameterException", "Invalid nextToken"),
            bad_max=lambda n: ApiError("InvalidParameterException",
                                       "maxResults must be between 1 and 100."))
        out: Params = {key: page}
        if token:
            out["nextToken"] = token
        return out

    def list_clusters(self, params: Params) -> Params:
        """ecs:ListClusters."""
        return self._ecs_page([self.config.cluster_arn(c.name) for c in self.config.clusters],
                              params, "clusterArns")

    def describe_clusters(self, params: Params) -> Params:
        """ecs:DescribeClusters; ``include`` adds SETTINGS, STATISTICS, TAGS, ATTACHMENTS."""
        include = set(params.get("include") or [])
        found: list[Params] = []
        failures: list[Params] = []
        for ref in params.get("clusters") or ["default"]:
            cluster = self.config.cluster(str(ref))
            if cluster is None:
                arn = str(ref) if str(ref).startswith("arn:") \
                    else self.config.cluster_arn(str(ref))
                failures.append({"arn": arn, "reason": "MISSING"})
                continue
            tasks = [t for t in self.config.tasks if t.cluster == cluster.name]
            item: Params = {
                "clusterArn": self.config.cluster_arn(cluster.name),
                "clusterName": cluster.name, "status": "ACTIVE",
                "registeredContainerInstancesCount": 0,
                "runningTasksCount": sum(t.last_status == "RUNNING" for t in tasks),
                "pendingTasksCount": sum(t.last_status == "PENDING" for t in tasks),
                "activeServicesCount": len(cluster.services),
                "capacityProviders": ["FARGATE", "FARGATE_SPOT"],
                "defaultCapacityProviderStrategy": []}
            if cluster.kms_key_id:
                item["configuration"] = {"executeCommandConfiguration": {
                    "kmsKeyId": cluster.kms_key_id, "logging": "DEFAULT"}}
            if "SETTINGS" in include:
                item["settings"] = [{"name": "containerInsights", "value": "disabled"}]
            if "STATISTICS" in include:
                item["statistics"] = []
            if "TAGS" in include:
                item["tags"] = []
            if "ATTACHMENTS" in include:
                item["attachments"] = []
            found.append(item)
        return {"clusters": found, "failures": failures}

    def list_services(self, params: Params) -> Params:
        """ecs:ListServices."""
        cluster = self._cluster(params.get("cluster"))
        return self._ecs_page([self.config.arn("ecs", f"service/{cluster.name}/{s}")
                               for s in cluster.services], params, "serviceArns")

    def list_tasks(self, params: Params) -> Params:
        """ecs:ListTasks (cluster, serviceName, family, desiredStatus)."""
        cluster = self._cluster(params.get("cluster"))
        service = params.get("serviceName")
        if service:
            service = str(service).rsplit("/", 1)[-1]
            if service not in cluster.services:
                raise ApiError("ServiceNotFoundException", "Service not found.")
        family = params.get("family")
        desired = params.get("desiredStatus") or "RUNNING"
        if desired not in ("RUNNING", "PENDING", "STOPPED"):
            raise ApiError("InvalidParameterException", "desiredStatus must be one of "
                           "RUNNING, PENDING or STOPPED.")

        def wanted(task: Task) -> bool:
            status_ok = (task.last_status == "STOPPED") == (desired == "STOPPED")
            return (task.cluster == cluster.name and status_ok
                    and (not service or task.service == service)
                    and (not family or task.family == family))

        return self._ecs_page([self.config.task_arn(t) for t in self.config.tasks
                               if wanted(t)], params, "taskArns")

    def describe_tasks(self, params: Params) -> Params:
        """ecs:DescribeTasks; unknown tasks are ``failures`` with reason MISSING."""
        cluster = self._cluster(params.get("cluster"))
        refs = params.get("tasks")
        if not isinstance(refs, list) or not refs:
            raise ApiError("InvalidParameterException", "Tasks cannot be empty.")
        if len(refs) > 100:
            raise ApiError("InvalidParameterException", "Tasks cannot have more than 100 "
                           "elements.")
        include_tags = "TAGS" in (params.get("include") or [])
        found: list[Params] = []
        failures: list[Params] = []
        for ref in refs:
            task = self._find_task(cluster, str(ref))
            if task is None:
                arn = str(ref) if str(ref).startswith("arn:") else self.config.arn(
                    "ecs", f"task/{cluster.name}/{ref}")
                failures.append({"arn": arn, "reason": "MISSING"})
            else:
                found.append(self._task_json(task, include_tags))
        return {"tasks": found, "failures": failures}

    # ------------------------------------------------------------------ KMS

    def _kms(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except KmsError as exc:
            raise ApiError(exc.code, exc.message) from None

    def generate_data_key(self, params: Params) -> Params:
        """kms:GenerateDataKey (§8.1): NumberOfBytes or KeySpec, EncryptionContext."""
        key_id = self._required(params, "KeyId")
        size, spec = params.get("NumberOfBytes"), params.get("KeySpec")
        if (size is None) == (spec is None):
            raise ApiError("ValidationException", "Please specify either number of bytes or "
                           "key spec.")
        if spec is not None:
            if spec not in KEY_SPECS:
                raise ApiError("ValidationException", "1 validation error detected: Value "
                               f"'{str(spec)[:20]}' at 'keySpec' failed to satisfy constraint: "
                               "Member must satisfy enum value set: [AES_256, AES_128]")
            size = KEY_SPECS[spec]
        if not isinstance(size, int) or isinstance(size, bool):
            raise ApiError("ValidationException", "NumberOfBytes must be an integer.")
        key = self._kms(lambda: self.kms.resolve(key_id))
        self._authorize("kms:GenerateDataKey", self.kms.key_arn(key))
        if params.get("DryRun"):
            self._kms(lambda: self.kms.authorize(key, "kms:GenerateDataKey"))
            raise ApiError("DryRunOperationException", "The request would have succeeded, but "
                           "the DryRun option is set.")
        context = params.get("EncryptionContext")
        plaintext, blob = self._kms(lambda: self.kms.generate_data_key(key_id, size, context))
        return {"CiphertextBlob": base64.b64encode(blob).decode(),
                "Plaintext": base64.b64encode(plaintext).decode(),
                "KeyId": self.kms.key_arn(key)}

    def decrypt(self, params: Params) -> Params:
        """kms:Decrypt (§8.1): the blob must come with exactly its encryption context."""
        raw = self._required(params, "CiphertextBlob")
        try:
            blob = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError("SerializationException", "Invalid base64 in CiphertextBlob.") \
                from None
        key_id = params.get("KeyId")
        if key_id is not None and not isinstance(key_id, str):
            raise ApiError("ValidationException", "KeyId must be a string.")
        plaintext, key = self._kms(lambda: self.kms.decrypt_with_key(
            blob, params.get("EncryptionContext"), key_id or None))
        self._authorize("kms:Decrypt", self.kms.key_arn(key))
        return {"KeyId": self.kms.key_arn(key),
                "Plaintext": base64.b64encode(plaintext).decode(),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}

    def describe_key(self, params: Params) -> Params:
        """kms:DescribeKey."""
        key_id = self._required(params, "KeyId")
        key = self._kms(lambda: self.kms.resolve(key_id))
        self._authorize("kms:DescribeKey", self.kms.key_arn(key))
        return {"KeyMetadata": {
            "AWSAccountId": self.config.account_id, "KeyId": key.key_id,
            "Arn": self.kms.key_arn(key), "CreationDate": self._started, "Enabled": True,
            "Description": key.description, "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": "Enabled", "Origin": "AWS_KMS", "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT", "KeySpec": "SYMMETRIC_DEFAULT",
            "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"], "MultiRegion": False}}

    # ------------------------------------------------------------------ EC2 (query protocol)

    def _ec2(self, request: Request) -> Response:
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        form = {**request.query, **form}
        action = form.get("Action", "")
        self.requests.append(f"EC2.{action}")
        self._maybe_throttle()
        if action != "DescribeInstances":
            raise ApiError("InvalidAction", f"The action {action[:64]} is not valid for this "
                           "web service.")
        self._authorize("ec2:DescribeInstances", "*")
        if form.get("DryRun", "").lower() == "true":
            raise ApiError("DryRunOperation", "Request would have succeeded, but DryRun flag "
                           "is set.", 412)
        ids = [v for k, v in sorted(form.items(), key=lambda kv: _index(kv[0]))
               if re.match(r"^InstanceId\.\d+$", k)]
        filters: list[tuple[str, list[str]]] = []
        for key, name in sorted(form.items(), key=lambda kv: _index(kv[0])):
            match = re.match(r"^Filter\.(\d+)\.Name$", key)
            if match:
                prefix = f"Filter.{match.group(1)}.Value."
                values = [v for k, v in form.items() if k.startswith(prefix)]
                if name not in _EC2_FILTERS and not name.startswith("tag:"):
                    raise ApiError("InvalidParameterValue", f"The filter '{name[:64]}' is "
                                   "invalid")
                filters.append((name, values))
        ec2 = [i for i in self.config.instances if not i.is_managed_instance]
        if ids:
            malformed = [i for i in ids if not _EC2_ID.match(i)]
            if malformed:
                raise ApiError("InvalidInstanceID.Malformed", f'Invalid id: "{malformed[0][:40]}"')
            known = {i.instance_id for i in ec2}
            missing = [i for i in ids if i not in known]
            if missing:
                raise ApiError("InvalidInstanceID.NotFound",
                               f"The instance ID '{missing[0]}' does not exist"
                               if len(missing) == 1 else
                               f"The instance IDs '{', '.join(missing)}' do not exist")
            ec2 = [i for i in ec2 if i.instance_id in ids]
        ec2 = [i for i in ec2 if all(_ec2_matches(i, n, v) for n, v in filters)]
        if ids and form.get("MaxResults"):
            raise ApiError("InvalidParameterCombination", "The parameter instancesSet cannot "
                           "be used with the parameter maxResults")
        params: Params = {}
        if form.get("MaxResults"):
            try:
                params["MaxResults"] = int(form["MaxResults"])
            except ValueError:
                params["MaxResults"] = -1
        if form.get("NextToken"):
            params["NextToken"] = form["NextToken"]
        page, token = self._page(
            ec2, params, token_key="NextToken", max_key="MaxResults", limits=(5, 1000),
            default=1000, bad_token=ApiError("InvalidParameterValue", "Invalid value for "
                                             "nextToken"),
            bad_max=lambda n: ApiError("InvalidParameterValue", f"Value ( {n} ) for parameter "
                                       "maxResults is invalid. Expecting a value between 5 "
                                       "and 1000."))
        body = ['<?xml version="1.0" encoding="UTF-8"?>\n',
                f'<DescribeInstancesResponse xmlns="{EC2_NAMESPACE}">',
                f"<requestId>{uuid.uuid4()}</requestId><reservationSet>"]
        body += [self._reservation_xml(i) for i in page]
        body.append("</reservationSet>")
        if token:
            body.append(f"<nextToken>{escape(token)}</nextToken>")
        body.append("</DescribeInstancesResponse>")
        return Response(200, "".join(body).encode(), {"Content-Type": XML_CONTENT_TYPE})

    def _reservation_xml(self, i: Instance) -> str:
        digest = hashlib.sha256(i.instance_id.encode()).hexdigest()
        windows = i.platform_type == "Windows"
        tags = "".join(f"<item><key>{escape(k)}</key><value>{escape(v)}</value></item>"
                       for k, v in i.all_tags.items())
        running = i.state == "running"
        return (
            f"<item><reservationId>r-{digest[:17]}</reservationId>"
            f"<ownerId>{self.config.account_id}</ownerId><groupSet/><instancesSet><item>"
            f"<instanceId>{escape(i.instance_id)}</instanceId>"
            f"<imageId>ami-{digest[17:34]}</imageId>"
            f"<instanceState><code>{_EC2_STATES.get(i.state, 16)}</code>"
            f"<name>{escape(i.state)}</name></instanceState>"
            f"<privateDnsName>{escape(i.private_dns or '')}</privateDnsName>"
            f"<dnsName>{escape(i.public_dns or '') if running else ''}</dnsName>"
            "<instanceType>t3.micro</instanceType>"
            f"<launchTime>{_iso(self._started - 86400)}</launchTime>"
            f"<placement><availabilityZone>{self.config.region}a</availabilityZone>"
            "<tenancy>default</tenancy></placement>"
            + ("<platform>windows</platform>" if windows else "")
            + f"<privateIpAddress>{escape(i.private_ip)}</privateIpAddress>"
            + (f"<ipAddress>{escape(i.public_ip)}</ipAddress>" if i.public_ip and running
               else "")
            + "<architecture>x86_64</architecture>"
            f"<platformDetails>{'Windows' if windows else 'Linux/UNIX'}</platformDetails>"
            f"<tagSet>{tags}</tagSet>"
            "</item></instancesSet></item>")

    def _ec2_error(self, exc: ApiError) -> Response:
        code, status = _EC2_ERRORS.get(exc.code, (exc.code, exc.status))
        message = exc.message
        if exc.code == "AccessDeniedException":
            message = "You are not authorized to perform this operation. " + message
        elif exc.code == "MissingAuthenticationTokenException":
            message = ("The request must contain either a valid (registered) AWS access key "
                       "ID or X.509 certificate.")
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
                f"</Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>")
        return Response(status, body.encode(), {"Content-Type": XML_CONTENT_TYPE})


#: JSON operations that check ``denied_actions`` against their own resource ARN.
_SELF_AUTHORIZED = {"StartSession", "ResumeSession", "TerminateSession", "CreateDocument",
                    "DescribeDocument", "GetDocument", "ExecuteCommand", "GenerateDataKey",
                    "Decrypt", "DescribeKey"}
_INSTANCE_FILTER_KEYS = {"InstanceIds", "AgentVersion", "PingStatus", "PlatformTypes",
                         "ActivationIds", "IamRole", "ResourceType", "AssociationStatus"}
_EC2_FILTERS = {"tag-key", "private-ip-address", "ip-address", "private-dns-name", "dns-name",
                "instance-id", "instance-state-name", "instance-state-code", "platform",
                "platform-details"}
#: JSON-style error codes → EC2's (code, HTTP status).
_EC2_ERRORS = {"AccessDeniedException": ("UnauthorizedOperation", 403),
               "ThrottlingException": ("RequestLimitExceeded", 503),
               "MissingAuthenticationTokenException": ("MissingAuthenticationToken", 401),
               "IncompleteSignatureException": ("IncompleteSignature", 400),
               "InvalidSignatureException": ("AuthFailure", 401)}


def _index(key: str) -> tuple[int, ...]:
    """Sort key for ``Filter.10.Name`` after ``Filter.2.Name``."""
    return tuple(int(n) for n in re.findall(r"\d+", key))


def _instance_matches(i: Instance, key: str, values: list[str]) -> bool:
    """One DescribeInstanceInformation filter."""
    if key == "InstanceIds":
        return i.instance_id in values
    if key == "PingStatus":
        return i.ping_status in values
    if key == "PlatformTypes":
        return i.platform_type in values
    if key == "AgentVersion":
        return i.agent_version in values
    if key == "ResourceType":
        return ("ManagedInstance" if i.is_managed_instance else "EC2Instance") in values
    if key == "tag-key":
        return any(k in i.all_tags for k in values)
    if key.startswith("tag:"):
        return i.all_tags.get(key[4:]) in values
    return False  # ActivationIds, IamRole, AssociationStatus: none set


def _ec2_matches(i: Instance, name: str, values: list[str]) -> bool:
    """One DescribeInstances filter; values may use EC2's ``*`` and ``?`` wildcards."""
    if name == "tag-key":
        fields: list[str] = list(i.all_tags)
    elif name.startswith("tag:"):
        tag = i.all_tags.get(name[4:])
        fields = [tag] if tag is not None else []
    else:
        running = i.state == "running"
        value = {
            "private-ip-address": i.private_ip,
            "ip-address": i.public_ip if running else None,
            "private-dns-name": i.private_dns,
            "dns-name": i.public_dns if running else None,
            "instance-id": i.instance_id,
            "instance-state-name": i.state,
            "instance-state-code": str(_EC2_STATES.get(i.state, 16)),
            "platform": "windows" if i.platform_type == "Windows" else None,
            "platform-details": "Windows" if i.platform_type == "Windows" else "Linux/UNIX",
        }.get(name)
        fields = [value] if value is not None else []
    return any(fnmatch.fnmatchcase(f, v) for f in fields for v in values)
