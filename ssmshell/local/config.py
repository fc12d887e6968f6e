"""The fake world of the local Session Manager: instances, clusters, tasks, keys, documents.

Load it from JSON (or TOML on Python ≥ 3.11) with :func:`load_config`, or use
:func:`default_config`. Example file::

    {"region": "us-east-1",
     "session_kms_key_id": "alias/ssmshell-demo",
     "instances": [{"instance_id": "i-0123456789abcdef0", "name": "web-1",
                    "private_ip": "10.0.0.11"}],
     "clusters": [{"name": "prod", "kms_key_id": null, "services": ["api"]}],
     "tasks": [{"task_id": "0123456789abcdef0123456789abcdef", "cluster": "prod",
                "service": "api", "family": "api",
                "containers": [{"name": "app", "runtime_id": "0123…-1234567890"}]}],
     "keys": [{"key_id": "1234abcd-12ab-34cd-56ef-1234567890ab",
               "alias": "alias/ssmshell-demo"}],
     "denied_actions": ["ssm:StartSession"],
     "documents": {"My-Shell": {"schemaVersion": "1.0", "sessionType": "Standard_Stream"}}}

The module also holds the session documents (PROTOCOL.md §2.1, §2.7, §9) and
:func:`resolve_document`, which turns a document plus StartSession
``Parameters`` into what the agent needs (session type, properties, command,
separate streams and prefixes).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssmshell.aws.documents import COMMAND_DOCUMENT, command_document_content
from ssmshell.errors import Exit, UserError

#: Session types the agent knows (§9, §10).
SESSION_TYPES = ("Standard_Stream", "InteractiveCommands", "NonInteractiveCommands", "Port")
#: ``stdOutSeparatorPrefix`` / ``stdErrSeparatorPrefix`` must match this (§9.3).
PREFIX_PATTERN = re.compile(r"^[0-9a-zA-Z\r\n_:-]{0,30}$")
#: What ``ssm:StartSession`` accepts as a managed node id (§2.1).
INSTANCE_ID_PATTERN = re.compile(r"^(?:i-(?:[0-9a-f]{8}|[0-9a-f]{17})|mi-[0-9a-f]{17})$")
#: An ECS task id (the last segment of the task ARN).
TASK_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
_PING_STATUSES = ("Online", "ConnectionLost", "Inactive")
_AGENT_STATUSES = ("RUNNING", "STOPPED", "PENDING")


class ConfigError(UserError):
    """A local config that cannot be read or does not make sense."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Exit.USAGE)


# ---------------------------------------------------------------------------- the world


@dataclass
class Instance:
    """A managed node (EC2 ``i-…`` or hybrid ``mi-…``).

    ``name`` is its Name tag; ``state`` is the EC2 instance state
    (``instance-state-name``); ``tags`` are extra EC2 tags.
    """

    instance_id: str
    name: str | None = None
    private_ip: str = "10.0.0.10"
    public_ip: str | None = None
    private_dns: str | None = None
    public_dns: str | None = None
    platform_type: str = "Linux"
    platform_name: str = "Amazon Linux"
    ping_status: str = "Online"
    agent_version: str = "3.3.1142.0"
    state: str = "running"
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.private_dns is None:
            self.private_dns = f"ip-{self.private_ip.replace('.', '-')}.ec2.internal"
        if self.public_dns is None and self.public_ip:
            self.public_dns = f"ec2-{self.public_ip.replace('.', '-')}.compute-1.amazonaws.com"

    @property
    def is_managed_instance(self) -> bool:
        """A hybrid / on-premises node (``mi-…``), which EC2 does not know."""
        return self.instance_id.startswith("mi-")

    @property
    def all_tags(self) -> dict[str, str]:
        """EC2 tags including ``Name``."""
        tags = dict(self.tags)
        if self.name is not None:
            tags["Name"] = self.name
        return tags


@dataclass
class Container:
    """A container of an ECS task; ``managed_agent_status`` is the ExecuteCommandAgent's."""

    name: str
    runtime_id: str
    managed_agent_status: str = "RUNNING"
    image: str = "public.ecr.aws/docker/library/busybox:latest"


@dataclass
class Task:
    """An ECS task (``task_id`` is 32 hex digits; ``service`` None = a standalone task)."""

    task_id: str
    cluster: str
    containers: list[Container]
    service: str | None = None
    family: str = "app"
    enable_execute_command: bool = True
    last_status: str = "RUNNING"

    def container(self, name: str) -> Container | None:
        """The container called ``name``."""
        return next((c for c in self.containers if c.name == name), None)


@dataclass
class Cluster:
    """An ECS cluster; ``kms_key_id`` is executeCommandConfiguration.kmsKeyId."""

    name: str
    kms_key_id: str | None = None
    services: list[str] = field(default_factory=list)


@dataclass
class KmsKey:
    """A KMS key; ``usable`` False makes every call with it AccessDenied."""

    key_id: str
    alias: str | None = None
    usable: bool = True
    description: str = ""


@dataclass
class LocalConfig:
    """Everything the local Session Manager pretends exists.

    Mutable on purpose: tests flip ``session_kms_key_id``, ``denied_actions``,
    a cluster's ``kms_key_id`` and so on while the servers run.
    """

    region: str = "us-east-1"
    account_id: str = "123456789012"
    instances: list[Instance] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    keys: list[KmsKey] = field(default_factory=list)
    #: The account's Session Manager preferences KMS key: when set, SSM shell and
    #: command sessions are KMS-encrypted (Port sessions never are, §10.1).
    session_kms_key_id: str | None = None
    #: The agent insists on the enhanced random challenge (§8.6).
    require_kms_challenge: bool = False
    #: Program for shell sessions (None: $SHELL or /bin/sh).
    shell: str | None = None
    agent_version: str = "3.3.1142.0"
    #: IAM actions the caller is denied, e.g. {"ssm:StartSession"} (AccessDenied tests).
    denied_actions: set[str] = field(default_factory=set)
    #: Extra session documents by name (content as CreateDocument takes it, parsed).
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The IAM user name of the (only) caller; also the prefix of SSM session ids.
    user_name: str = "local"

    # ------------------------------------------------------------------ ARNs

    @property
    def caller_arn(self) -> str:
        """``arn:aws:iam::<account>:user/<user_name>``."""
        return f"arn:aws:iam::{self.account_id}:user/{self.user_name}"

    def arn(self, service: str, resource: str) -> str:
        """``arn:aws:<service>:<region>:<account>:<resource>``."""
        return f"arn:aws:{service}:{self.region}:{self.account_id}:{resource}"

    def cluster_arn(self, cluster: str) -> str:
        """The ARN of the cluster called ``cluster``."""
        return self.arn("ecs", f"cluster/{cluster}")

    def task_arn(self, task: Task) -> str:
        """``arn:aws:ecs:…:task/<cluster>/<id>`` (the long ARN format)."""
        return self.arn("ecs", f"task/{task.cluster}/{task.task_id}")

    def key_arn(self, key: KmsKey) -> str:
        """``arn:aws:kms:…:key/<id>``."""
        return self.arn("kms", f"key/{key.key_id}")

    def instance_arn(self, instance_id: str) -> str:
        """The IAM resource ARN StartSession is authorised against."""
        if instance_id.startswith("mi-"):
            return self.arn("ssm", f"managed-instance/{instance_id}")
        return self.arn("ec2", f"instance/{instance_id}")

    # ------------------------------------------------------------------ lookups

    def cluster(self, name_or_arn: str) -> Cluster | None:
        """A cluster by name or ARN."""
        name = name_or_arn.rsplit("/", 1)[-1]
        if name_or_arn.startswith("arn:") and name_or_arn != self.cluster_arn(name):
            return None
        return next((c for c in self.clusters if c.name == name), None)

    def instance(self, instance_id: str) -> Instance | None:
        """A managed node by id."""
        return next((i for i in self.instances if i.instance_id == instance_id), None)

    def task(self, cluster: str, task_id: str) -> Task | None:
        """A task of ``cluster`` (name) by id."""
        return next((t for t in self.tasks if t.cluster == cluster and t.task_id == task_id),
                    None)

    def document(self, name: str) -> dict[str, Any] | None:
        """A session document's content: the extra ones first, then the built-in ones."""
        if name in self.documents:
            return self.documents[name]
        return BUILTIN_DOCUMENTS.get(name)

    def validate(self) -> None:
        """Check ids and cross references.

        Raises:
            ConfigError: the first problem found.
        """
        seen: set[str] = set()
        for instance in self.instances:
            if not INSTANCE_ID_PATTERN.match(instance.instance_id):
                raise ConfigError(f"bad instance id {instance.instance_id!r} in config "
                                  "(i-<8 or 17 hex> or mi-<17 hex>)")
            if instance.instance_id in seen:
                raise ConfigError(f"duplicate instance id {instance.instance_id} in config")
            seen.add(instance.instance_id)
            if instance.ping_status not in _PING_STATUSES:
                raise ConfigError(f"instance {instance.instance_id}: ping_status must be one "
                                  f"of {', '.join(_PING_STATUSES)}")
        names = [c.name for c in self.clusters]
        if len(set(names)) != len(names):
            raise ConfigError("duplicate cluster names in config")
        key_refs = {k.key_id for k in self.keys} | {k.alias for k in self.keys if k.alias}
        for key in self.keys:
            if key.alias is not None and not key.alias.startswith("alias/"):
                raise ConfigError(f"key {key.key_id}: alias must start with 'alias/'")
        for task in self.tasks:
            if not TASK_ID_PATTERN.match(task.task_id):
                raise ConfigError(f"bad task id {task.task_id!r} in config (32 hex digits)")
            cluster = self.cluster(task.cluster)
            if cluster is None:
                raise ConfigError(f"task {task.task_id}: unknown cluster {task.cluster!r}")
            if task.service is not None and task.service not in cluster.services:
                raise ConfigError(f"task {task.task_id}: cluster {task.cluster} has no "
                                  f"service {task.service!r}")
            if not task.containers:
                raise ConfigError(f"task {task.task_id}: no containers")
            for container in task.containers:
                if container.managed_agent_status not in _AGENT_STATUSES:
                    raise ConfigError(f"task {task.task_id}: managed_agent_status must be "
                                      f"one of {', '.join(_AGENT_STATUSES)}")
        for owner, ref in [("session_kms_key_id", self.session_kms_key_id)] + [
                (f"cluster {c.name}", c.kms_key_id) for c in self.clusters]:
            if ref is not None and ref.rsplit("/", 1)[-1] not in {
                    r.rsplit("/", 1)[-1] for r in key_refs}:
                raise ConfigError(f"{owner}: unknown KMS key {ref!r}")
        for name, content in self.documents.items():
            try:
                validate_document_content(content)
            except DocumentError as exc:
                raise ConfigError(f"document {name}: {exc}") from None


def ecs_target(cluster: str, task_id: str, runtime_id: str) -> str:
    """``ecs:<clusterName>_<taskId>_<containerRuntimeId>`` (§2.3)."""
    return f"ecs:{cluster}_{task_id}_{runtime_id}"


def default_config() -> LocalConfig:
    """The built-in world used by ``ssmshell demo`` and the tests.

    Instances ``demo-web`` (10.0.0.11, public IP), ``demo-db``, an on-premises
    node, and ``demo-offline`` (ConnectionLost); cluster ``demo`` (KMS-encrypted
    exec) with service ``web`` running a two-container task (``app``,
    ``sidecar``), a single-container task and a task without ECS Exec; cluster
    ``plain`` without KMS; key ``alias/ssmshell-demo`` (also the Session
    Manager preferences key) and an unusable key ``alias/ssmshell-denied``.
    """
    key = KmsKey("6a3c2e1f-0b9d-4c8e-a7f6-5d4c3b2a1f0e", "alias/ssmshell-demo",
                 description="ssmshell demo key")
    denied = KmsKey("0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0", "alias/ssmshell-denied",
                    usable=False, description="a key the caller may not use")
    return LocalConfig(
        instances=[
            Instance("i-0123456789abcdef0", "demo-web", "10.0.0.11", public_ip="203.0.113.11"),
            Instance("i-0fedcba9876543210", "demo-db", "10.0.0.12"),
            Instance("mi-0123456789abcdef0", "on-prem-box", "192.168.1.20",
                     private_dns="on-prem-box.corp.example", platform_name="Ubuntu"),
            Instance("i-00000000000000bad", "demo-offline", "10.0.0.13",
                     ping_status="ConnectionLost"),
        ],
        clusters=[Cluster("demo", key.key_id, ["web"]), Cluster("plain", None, ["api"])],
        tasks=[
            Task("0a1b2c3d4e5f60718293a4b5c6d7e8f9", "demo",
                 [Container("app", "0a1b2c3d4e5f60718293a4b5c6d7e8f9-1234567890"),
                  Container("sidecar", "0a1b2c3d4e5f60718293a4b5c6d7e8f9-2345678901")],
                 service="web", family="web"),
            Task("1b2c3d4e5f60718293a4b5c6d7e8f90a", "demo",
                 [Container("worker", "1b2c3d4e5f60718293a4b5c6d7e8f90a-3456789012")],
                 family="worker"),
            Task("2c3d4e5f60718293a4b5c6d7e8f90a1b", "demo",
                 [Container("app", "2c3d4e5f60718293a4b5c6d7e8f90a1b-4567890123")],
                 family="legacy", enable_execute_command=False),
            Task("3d4e5f60718293a4b5c6d7e8f90a1b2c", "plain",
                 [Container("api", "3d4e5f60718293a4b5c6d7e8f90a1b2c-5678901234")],
                 service="api", family="api"),
        ],
        keys=[key, denied],
        session_kms_key_id=key.alias,
        documents={COMMAND_DOCUMENT: command_document_content()},
    )


# ---------------------------------------------------------------------------- loading


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against (and built into) the dataclass field type ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object")
        return _build(annotation, value, where)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return [_convert(v, args[0], f"{where}[{n}]") for n, v in enumerate(value)]
    if origin is set:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return {_convert(v, args[0], f"{where}[]") for v in value}
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    if annotation in (str, int):
        if not isinstance(value, annotation) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a {'string' if annotation is str else 'number'}")
        return value
    return value  # pragma: no cover - no other field types exist


def _build(cls: type[Any], data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = [name for name, f in known.items() if name not in data
               and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing field(s) {', '.join(missing)}")
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}")
              for name, value in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> LocalConfig:
    """Build and validate a :class:`LocalConfig` from plain data (the JSON/TOML shape).

    Omitted keys take the :class:`LocalConfig` defaults (an empty world).

    Raises:
        ConfigError: unknown keys, wrong types, bad ids or dangling references.
    """
    if not isinstance(data, dict):
        raise ConfigError("config: the top level must be an object")
    config: LocalConfig = _build(LocalConfig, data, "config")
    config.validate()
    return config


def config_to_dict(config: LocalConfig) -> dict[str, Any]:
    """The JSON shape of ``config`` (what :func:`config_from_dict` reads back)."""
    data = dataclasses.asdict(config)
    data["denied_actions"] = sorted(config.denied_actions)
    return data


def load_config(path: str | Path) -> LocalConfig:
    """Read a JSON file, or TOML when the name ends in ``.toml`` (Python ≥ 3.11).

    Raises:
        ConfigError: unreadable, unparsable, invalid, or TOML without tomllib.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib  # type: ignore[import-not-found,unused-ignore]
            except ImportError:  # Python 3.10
                raise ConfigError(f"{path}: TOML configs need Python 3.11 or later; "
                                  "use a JSON file instead") from None
            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be an object")
    return config_from_dict(data)


# ---------------------------------------------------------------------------- documents


class DocumentError(Exception):
    """A session document or parameter problem; ``code`` is the AWS error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_PORT = ("^([1-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]"
         "|6553[0-5])$")
_LOCAL_PORT = ("^([0-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}"
               "|655[0-2][0-9]|6553[0-5])$")
_HOST = r"^[a-zA-Z0-9._:\[\]%-]+$"


def _command_document(session_type: str, description: str,
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    linux: dict[str, Any] = {"commands": "{{ command }}", "runAsElevated": False}
    linux.update(extra or {})
    return {
        "schemaVersion": "1.0",
        "description": description,
        "sessionType": session_type,
        "parameters": {"command": {"type": "String",
                                   "description": "The command to run on the node."}},
        "properties": {"linux": dict(linux), "macos": dict(linux), "windows": dict(linux)},
    }


def _port_parameters(default_port: str) -> dict[str, Any]:
    return {
        "portNumber": {"type": "String", "description": "(Optional) Port number of the "
                       "server on the instance", "allowedPattern": _PORT,
                       "default": default_port},
        "localPortNumber": {"type": "String", "description": "(Optional) Port number on "
                            "local machine to forward traffic to. An open port is chosen "
                            "at run-time if not provided", "allowedPattern": _LOCAL_PORT,
                            "default": "0"},
    }


#: The session documents every account has (AWS-owned ones, the preferences document
#: and SSM-SessionManagerRunShell). Content as ``GetDocument`` shows it. ssmshell's own
#: SSMShell-NonInteractiveCommand is not among them: the default config adds it to
#: ``documents`` as if ``ssmshell setup`` had been run (tests delete it to see the fallback).
BUILTIN_DOCUMENTS: dict[str, dict[str, Any]] = {
    "SSM-SessionManagerRunShell": {
        "schemaVersion": "1.0",
        "description": "Document to hold regional settings for Session Manager",
        "sessionType": "Standard_Stream",
        "inputs": {"s3BucketName": "", "s3KeyPrefix": "", "s3EncryptionEnabled": True,
                   "cloudWatchLogGroupName": "", "cloudWatchEncryptionEnabled": True,
                   "kmsKeyId": "", "runAsEnabled": False, "runAsDefaultUser": "",
                   "idleSessionTimeout": "20",
                   "shellProfile": {"windows": "", "linux": ""}},
    },
    "AWS-StartInteractiveCommand": _command_document(
        "InteractiveCommands", "Document to run single interactive command on an instance"),
    "AWS-StartNonInteractiveCommand": _command_document(
        "NonInteractiveCommands", "Document to run single non-interactive command on an "
        "instance"),
    "AWS-StartPortForwardingSession": {
        "schemaVersion": "1.0",
        "description": "Document to start port forwarding session over Session Manager",
        "sessionType": "Port",
        "parameters": _port_parameters("80"),
        "properties": {"portNumber": "{{ portNumber }}", "type": "LocalPortForwarding",
                       "localPortNumber": "{{ localPortNumber }}"},
    },
    "AWS-StartPortForwardingSessionToRemoteHost": {
        "schemaVersion": "1.0",
        "description": "Document to start port forwarding session over Session Manager to "
                       "a remote host",
        "sessionType": "Port",
        "parameters": {
            "host": {"type": "String", "description": "(Required) Hostname or IP address "
                     "of the destination server", "allowedPattern": _HOST},
            **_port_parameters("80"),
        },
        "properties": {"portNumber": "{{ portNumber }}", "type": "LocalPortForwarding",
                       "localPortNumber": "{{ localPortNumber }}", "host": "{{ host }}"},
    },
    "AWS-StartSSHSession": {
        "schemaVersion": "1.0",
        "description": "Document to start SSH session over Session Manager",
        "sessionType": "Port",
        "parameters": {"portNumber": {"type": "String", "description": "(Optional) Port "
                                      "number of SSH server on the instance",
                                      "allowedPattern": _PORT, "default": "22"}},
        "properties": {"portNumber": "{{ portNumber }}"},
    },
}

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")
_PARAMETER_TYPES = ("String", "StringList", "Boolean", "Integer", "MapList", "StringMap")


def validate_document_content(content: Any) -> None:
    """Check the shape of a Session document's content (CreateDocument).

    Raises:
        DocumentError: ``InvalidDocumentContent`` / ``InvalidDocumentSchemaVersion``.
    """
    if not isinstance(content, dict):
        raise DocumentError("InvalidDocumentContent", "The content for the document is not "
                            "valid: the document must be a JSON object.")
    if str(content.get("schemaVersion", "")) != "1.0":
        raise DocumentError("InvalidDocumentSchemaVersion", "The schema version for the "
                            "Session document must be 1.0.")
    session_type = content.get("sessionType")
    if session_type not in SESSION_TYPES:
        raise DocumentError("InvalidDocumentContent", "sessionType must be one of "
                            + ", ".join(SESSION_TYPES) + ".")
    parameters = content.get("parameters", {})
    if not isinstance(parameters, dict):
        raise DocumentError("InvalidDocumentContent", "parameters must be an object.")
    for name, spec in parameters.items():
        if not isinstance(spec, dict) or spec.get("type") not in _PARAMETER_TYPES:
            raise DocumentError("InvalidDocumentContent",
                                f"Parameter {name} must have a valid type.")
    for key in ("properties", "inputs"):
        if not isinstance(content.get(key, {}), dict):
            raise DocumentError("InvalidDocumentContent", f"{key} must be an object.")


@dataclass
class ResolvedDocument:
    """A session document after parameter substitution: what the agent will run."""

    session_type: str
    properties: dict[str, Any] | None
    command: str | None
    separate_output_stream: bool
    stdout_prefix: str
    stderr_prefix: str
    #: ``inputs.kmsKeyId`` of the document, if set (overrides the preferences key).
    kms_key_id: str | None = None


def _parameter_values(declared: dict[str, Any],
                      parameters: dict[str, list[str]]) -> dict[str, str]:
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise DocumentError("InvalidParameters", "Parameters [" + ", ".join(unknown) + "] "
                            "are not defined in the document.")
    values: dict[str, str] = {}
    for name, spec in declared.items():
        given = parameters.get(name)
        kind = spec.get("type", "String")
        if given:
            if kind != "StringList" and len(given) > 1:
                raise DocumentError("InvalidParameters", f"Parameter \"{name}\" takes one "
                                    "value.")
            value = "\n".join(given) if kind == "StringList" else given[0]
        elif "default" in spec:
            default = spec["default"]
            value = ("\n".join(str(v) for v in default) if isinstance(default, list)
                     else _text(default))
        else:
            raise DocumentError("InvalidParameters", f"Parameter \"{name}\" is required "
                                "but was not provided.")
        pattern = spec.get("allowedPattern")
        if pattern and given and re.search(pattern, value) is None:
            raise DocumentError("InvalidParameters", f"Parameter \"{name}\" does not match "
                                f"the allowed pattern {pattern}.")
        allowed = spec.get("allowedValues")
        if allowed and given and value not in [str(v) for v in allowed]:
            raise DocumentError("InvalidParameters", f"Parameter \"{name}\" must be one of "
                                + ", ".join(str(v) for v in allowed) + ".")
        values[name] = value
    return values


def _text(value: Any) -> str:
    """A property value as the agent sees it: strings as they are, JSON for the rest."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def resolve_document(content: dict[str, Any], parameters: dict[str, list[str]] | None,
                     platform: str = "Linux") -> ResolvedDocument:
    """Apply StartSession ``Parameters`` (``{"name": ["value"]}``) to a session document.

    ``{{ name }}`` placeholders anywhere in ``properties`` are replaced by the
    given value or the parameter's default. Port sessions get their properties
    with string values (§2.7); shell types get the platform's ``commands``,
    ``separateOutputStream`` and prefixes (§9.3), and ``properties`` None.

    Args:
        content: the document content (parsed JSON).
        parameters: the request's Parameters.
        platform: the node's PlatformType (selects ``linux``/``macos``/``windows``).

    Raises:
        DocumentError: unknown, missing or invalid parameters (``InvalidParameters``),
            bad prefixes or session type (``InvalidDocumentContent``).
    """
    validate_document_content(content)
    values = _parameter_values(content.get("parameters") or {}, parameters or {})

    def substitute(value: Any) -> Any:
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), value)
        if isinstance(value, dict):
            return {k: substitute(v) for k, v in value.items()}
        if isinstance(value, list):
            return [substitute(v) for v in value]
        return value

    session_type = str(content["sessionType"])
    properties: dict[str, Any] = substitute(copy.deepcopy(content.get("properties") or {}))
    inputs = content.get("inputs") or {}
    kms_key_id = str(inputs.get("kmsKeyId") or "") or None
    if session_type == "Port":
        return ResolvedDocument(session_type, {k: _text(v) for k, v in properties.items()},
                                None, False, "", "", None)
    section = properties.get(platform.lower(), properties)
    if not isinstance(section, dict):
        section = {}
    commands = section.get("commands")
    if isinstance(commands, list):
        commands = "\n".join(str(c) for c in commands)
    separate = _text(section.get("separateOutputStream", False)).lower() == "true"
    prefixes = []
    for key in ("stdOutSeparatorPrefix", "stdErrSeparatorPrefix"):
        prefix = _text(section.get(key, ""))
        if not PREFIX_PATTERN.match(prefix):
            raise DocumentError("InvalidDocumentContent",
                                f"{key} must match {PREFIX_PATTERN.pattern}.")
        prefixes.append(prefix)
    if session_type != "Standard_Stream" and not commands:
        raise DocumentError("InvalidDocumentContent", "The document has no commands for "
                            f"the {platform} platform.")
    return ResolvedDocument(session_type, None, str(commands) if commands else None,
                            separate, prefixes[0], prefixes[1], kms_key_id)
