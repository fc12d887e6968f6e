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
               "alias": "alias/ssmshell-demo"}]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ssmshell.errors import Exit, UserError


@dataclass
class Instance:
    """A managed node."""

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

    def __post_init__(self) -> None:
        if self.private_dns is None:
            self.private_dns = f"ip-{self.private_ip.replace('.', '-')}.ec2.internal"


@dataclass
class Container:
    """A container of an ECS task."""

    name: str
    runtime_id: str
    managed_agent_status: str = "RUNNING"
    image: str = "public.ecr.aws/docker/library/busybox:latest"


@dataclass
class Task:
    """An ECS task."""

    task_id: str
    cluster: str
    containers: list[Container]
    service: str | None = None
    family: str = "app"
    enable_execute_command: bool = True
    last_status: str = "RUNNING"


@dataclass
class Cluster:
    """An ECS cluster; ``kms_key_id`` is executeCommandConfiguration.kmsKeyId."""

    name: str
    kms_key_id: str | None = None
    services: list[str] = field(default_factory=list)


@dataclass
class KmsKey:
    """A KMS key; ``usable`` False makes the caller's calls AccessDenied."""

    key_id: str
    alias: str | None = None
    usable: bool = True


@dataclass
class LocalConfig:
    """Everything the local Session Manager pretends exists."""

    region: str = "us-east-1"
    account_id: str = "123456789012"
    instances: list[Instance] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    keys: list[KmsKey] = field(default_factory=list)
    #: The account's Session Manager preferences KMS key (encrypts SSM shell sessions).
    session_kms_key_id: str | None = None
    require_kms_challenge: bool = False
    #: Program for shell sessions (None: $SHELL or /bin/sh).
    shell: str | None = None
    agent_version: str = "3.3.1142.0"
    #: IAM actions the caller is denied, e.g. {"ssm:StartSession"} (AccessDenied tests).
    denied_actions: set[str] = field(default_factory=set)
    #: Extra session documents by name (content as CreateDocument takes it).
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def caller_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:user/local"

    def cluster(self, name_or_arn: str) -> Cluster | None:
        name = name_or_arn.rsplit("/", 1)[-1]
        return next((c for c in self.clusters if c.name == name), None)

    def instance(self, instance_id: str) -> Instance | None:
        return next((i for i in self.instances if i.instance_id == instance_id), None)


def default_config() -> LocalConfig:
    """The built-in world used by ``ssmshell demo`` and the tests."""
    key = KmsKey("6a3c2e1f-0b9d-4c8e-a7f6-5d4c3b2a1f0e", "alias/ssmshell-demo")
    denied = KmsKey("0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0", "alias/ssmshell-denied",
                    usable=False)
    return LocalConfig(
        instances=[
            Instance("i-0123456789abcdef0", "demo-web", "10.0.0.11", public_ip="203.0.113.11",
                     public_dns="ec2-203-0-113-11.compute-1.amazonaws.com"),
            Instance("i-0fedcba9876543210", "demo-db", "10.0.0.12"),
            Instance("mi-0123456789abcdef0", "on-prem-box", "192.168.1.20",
                     platform_name="Ubuntu"),
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
    )


def _build(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise UserError(f"unknown {cls.__name__} field(s) in config: {', '.join(sorted(unknown))}",
                        Exit.USAGE)
    return cls(**data)


def config_from_dict(data: dict[str, Any]) -> LocalConfig:
    """Build a :class:`LocalConfig` from plain data (JSON/TOML shape).

    Raises:
        UserError: unknown keys or wrong shapes.
    """
    try:
        data = dict(data)
        data["instances"] = [_build(Instance, i) for i in data.get("instances", [])]
        data["clusters"] = [_build(Cluster, c) for c in data.get("clusters", [])]
        data["keys"] = [_build(KmsKey, k) for k in data.get("keys", [])]
        tasks = []
        for t in data.get("tasks", []):
            t = dict(t)
            t["containers"] = [_build(Container, c) for c in t.get("containers", [])]
            tasks.append(_build(Task, t))
        data["tasks"] = tasks
        data["denied_actions"] = set(data.get("denied_actions", []))
        return _build(LocalConfig, data)  # type: ignore[no-any-return]
    except (TypeError, AttributeError) as exc:
        raise UserError(f"bad local config: {exc}", Exit.USAGE) from None


def load_config(path: str | Path) -> LocalConfig:
    """Read a JSON file, or TOML when the name ends in ``.toml`` (Python ≥ 3.11).

    Raises:
        UserError: unreadable, unparsable, or TOML without tomllib.
    """
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}", Exit.USAGE) from None
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:
                raise UserError("TOML configs need Python 3.11+; use JSON", Exit.USAGE) from None
            data = tomllib.loads(text.decode())
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise UserError(f"cannot parse {path}: {exc}", Exit.USAGE) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be an object", Exit.USAGE)
    return config_from_dict(data)
