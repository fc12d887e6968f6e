"""Shell completion: the ``completion`` command and the live-value callbacks.

``ssmshell completion bash|zsh|fish`` prints the script built on click's shell
completion (the same text ``_SSMSHELL_COMPLETE=<shell>_source ssmshell`` prints);
``completions/`` holds checked-in copies. When the shell asks, the callbacks
below complete cluster names, services, running tasks, containers, instance ids
and Name tags, profiles, regions and aliases.

Completion must be fast and must never hang, print on stderr or prompt:

* results are cached per profile + region + endpoint + resource in
  ``$XDG_CACHE_HOME/ssmshell/completion`` (``~/.cache/ssmshell/completion``) for
  ``SSMSHELL_COMPLETION_TTL`` seconds (config ``[completion] ttl``, default 60);
* AWS is asked in a daemon thread that gets at most ``SSMSHELL_COMPLETION_TIMEOUT``
  seconds in all (config ``[completion] timeout``, default 2), with one attempt
  per call and short socket timeouts; past the limit the callback returns what it
  knows (a stale cache entry, or nothing) and the thread is abandoned;
* in a completion process stderr is pointed at /dev/null, MFA prompts of
  assume-role profiles are refused, and every exception means "no completions".

Nothing here imports boto3 at import time.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

#: click's completion instruction variable for the ``ssmshell`` program.
COMPLETE_VAR = "_SSMSHELL_COMPLETE"
PROG_NAME = "ssmshell"
SHELLS = ("bash", "zsh", "fish")
#: Environment overrides of the config file's ``[completion]`` settings.
TTL_ENV = "SSMSHELL_COMPLETION_TTL"
TIMEOUT_ENV = "SSMSHELL_COMPLETION_TIMEOUT"
#: A cache entry past its TTL is still offered when AWS does not answer in time,
#: unless it is older than this.
MAX_STALE = 24 * 3600.0

Rows = list[list[str]]

# ----------------------------------------------------------------------- the command


def completion_source(shell: str, command: click.Command | None = None) -> str:
    """The completion script for ``shell``, exactly as click's ``<shell>_source`` prints it.

    Args:
        shell: ``bash``, ``zsh`` or ``fish``.
        command: the root command (default: :data:`ssmshell.cli.cli`).
    """
    if command is None:
        from ssmshell.cli import cli

        command = cli
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click knows all three
        raise click.BadParameter(f"unsupported shell {shell!r}")
    return str(cls(command, {}, PROG_NAME, COMPLETE_VAR).source())


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion_cmd(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    \b
    bash: eval "$(ssmshell completion bash)"            # in ~/.bashrc
    zsh:  eval "$(ssmshell completion zsh)"             # in ~/.zshrc, after compinit
    fish: ssmshell completion fish > ~/.config/fish/completions/ssmshell.fish

    Cluster, service, task, container, instance, profile and region values are
    completed live (cached for a minute; see 'ssmshell config').
    """
    root = ctx.find_root().command
    click.echo(completion_source(shell, root), nl=False)


# ----------------------------------------------------------------------- settings


def _env_seconds(name: str) -> float | None:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return None
    return value if value >= 0 and value == value and value != float("inf") else None


def _config() -> Any:
    """The config file, or None when it cannot be read (completion never fails on it)."""
    try:
        from ssmshell.config import load_config

        return load_config()
    except Exception:
        return None


def cache_ttl(config: Any = None) -> float:
    """Seconds a cached completion result stays fresh."""
    from ssmshell.config import DEFAULT_COMPLETION_TTL

    env = _env_seconds(TTL_ENV)
    if env is not None:
        return env
    return float(config.completion_ttl) if config is not None else DEFAULT_COMPLETION_TTL


def aws_time_limit(config: Any = None) -> float:
    """Seconds one completion may spend asking AWS, in all."""
    from ssmshell.config import DEFAULT_COMPLETION_TIMEOUT

    env = _env_seconds(TIMEOUT_ENV)
    if env is not None:
        return env
    return float(config.completion_timeout) if config is not None \
        else DEFAULT_COMPLETION_TIMEOUT


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ssmshell`` (``~/.cache/ssmshell`` without XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "ssmshell"


# ----------------------------------------------------------------------- the cache


class _Cache:
    """Small JSON files, one per (AWS identity, resource); written atomically, 0600."""

    def __init__(self, identity: dict[str, Any], ttl: float) -> None:
        self.identity = identity
        self.ttl = ttl
        self.dir = cache_dir() / "completion"

    def _file(self, resource: str) -> Path:
        blob = json.dumps({**self.identity, "resource": resource}, sort_keys=True)
        return self.dir / (hashlib.sha256(blob.encode()).hexdigest()[:40] + ".json")

    def read(self, resource: str) -> tuple[float, Rows] | None:
        """(age in seconds, rows), or None."""
        if self.ttl <= 0:
            return None
        try:
            data = json.loads(self._file(resource).read_text("utf-8"))
            age = time.time() - float(data["time"])
            rows = [[str(x) for x in row] for row in data["rows"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (age, rows) if age >= 0 else None

    def write(self, resource: str, rows: Rows) -> None:
        if self.ttl <= 0:
            return
        with contextlib.suppress(OSError):
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump({"time": time.time(), "rows": rows}, out)
                os.replace(tmp, self._file(resource))
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise


# ----------------------------------------------------------------------- AWS look-ups


def _refuse_prompt(*_args: Any, **_kwargs: Any) -> str:
    raise RuntimeError("no prompts during shell completion")


def _quick_aws(profile: str | None, region: str | None, endpoint_url: str | None,
               limit: float) -> Any:
    """An :class:`~ssmshell.aws.api.Aws` whose clients try once, with short timeouts,
    and whose assume-role provider never prompts for an MFA code."""
    from ssmshell.aws.api import Aws

    class QuickAws(Aws):
        def client(self, service: str) -> Any:
            if service not in self._clients:
                from botocore.config import Config

                resolver = self.session._session.get_component("credential_provider")
                for provider in getattr(resolver, "providers", []):
                    if hasattr(provider, "_prompter"):
                        provider._prompter = _refuse_prompt
                config = Config(retries={"mode": "standard", "total_max_attempts": 1},
                                connect_timeout=max(0.1, min(1.0, limit)),
                                read_timeout=max(0.1, limit),
                                user_agent_extra="ssmshell-completion")
                self._clients[service] = self.session.client(
                    service, region_name=self.region, endpoint_url=self.endpoint_url,
                    config=config)
            return self._clients[service]

    return QuickAws(profile=profile, region=region, endpoint_url=endpoint_url)


class _Lookup:
    """The AWS side of one completion request: the cache, then AWS under a deadline."""

    def __init__(self, ctx: click.Context) -> None:
        config = _config()
        params = _params(ctx)
        given_profile = params.get("profile")
        given_region = params.get("region")
        if config is not None:
            self.profile = config.profile(given_profile)
            self.region = config.region(given_region)
        else:
            self.profile, self.region = given_profile, given_region
        self.endpoint_url = params.get("endpoint_url") or None
        self.limit = aws_time_limit(config)
        self.deadline = time.monotonic() + self.limit
        akid = os.environ.get("AWS_ACCESS_KEY_ID", "")
        identity = {
            "profile": self.profile or os.environ.get("AWS_PROFILE")
            or os.environ.get("AWS_DEFAULT_PROFILE") or "",
            "region": self.region or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION") or "",
            "endpoint": self.endpoint_url or "",
            "endpoints": {k: v for k, v in os.environ.items()
                          if k.startswith("AWS_ENDPOINT_URL")},
            "key": hashlib.sha256(akid.encode()).hexdigest()[:16] if akid else "",
        }
        self.cache = _Cache(identity, cache_ttl(config))
        self._aws: Any = None

    def aws(self) -> Any:
        if self._aws is None:
            self._aws = _quick_aws(self.profile, self.region, self.endpoint_url, self.limit)
        return self._aws

    def get(self, resource: str, fetch: Callable[[Any], Rows]) -> Rows:
        """Rows for ``resource``: fresh from the cache, else from ``fetch(aws)`` if it
        finishes before the deadline, else a stale cache entry, else nothing."""
        cached = self.cache.read(resource)
        if cached is not None and cached[0] <= self.cache.ttl:
            return cached[1]
        stale = cached[1] if cached is not None and cached[0] <= MAX_STALE else []
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return stale
        box: dict[str, Rows] = {}

        def work() -> None:
            with contextlib.suppress(BaseException):
                box["rows"] = fetch(self.aws())

        thread = threading.Thread(target=work, name="ssmshell-completion", daemon=True)
        thread.start()
        thread.join(remaining)
        if "rows" in box:
            self.cache.write(resource, box["rows"])
            return box["rows"]
        return stale if thread.is_alive() else []

    # ----------------------------------------------------------------- resources

    def clusters(self) -> list[str]:
        from ssmshell.aws.targets import list_clusters

        return [row[0] for row in self.get(
            "clusters", lambda aws: [[c.label] for c in list_clusters(aws)])]

    def cluster(self, ctx: click.Context) -> str | None:
        """``--cluster`` from the command line, the task ARN's cluster, or the only one."""
        params = _params(ctx)
        cluster = params.get("cluster")
        if cluster:
            return str(cluster)
        task = str(params.get("task") or "")
        if task.startswith("arn:") and task.count("/") == 2:
            return task.split("/")[1]
        clusters = self.clusters()
        return clusters[0] if len(clusters) == 1 else None

    def services(self, cluster: str) -> list[str]:
        from ssmshell.aws.targets import list_services

        return [row[0] for row in self.get(
            f"services\0{cluster}",
            lambda aws: [[c.label] for c in list_services(aws, cluster)])]

    def tasks(self, cluster: str, service: str | None) -> Rows:
        """[task id, help] of running tasks."""
        from ssmshell.aws.targets import list_tasks

        def fetch(aws: Any) -> Rows:
            rows = []
            for c in list_tasks(aws, cluster, service):
                fields = c.detail.split("  ")
                group = fields[0].replace(":", " ", 1) if fields and fields[0] else ""
                if "exec disabled" in fields:
                    group += " (exec disabled)"
                rows.append([c.label, group.strip()])
            return rows

        return self.get(f"tasks\0{cluster}\0{service or ''}", fetch)

    def containers(self, cluster: str, task: str) -> Rows:
        """[name, help] of the task's containers."""
        from ssmshell.aws.targets import list_containers

        return self.get(f"containers\0{cluster}\0{task}", lambda aws: [
            [c.label, c.detail] for c in list_containers(aws, cluster, task)])

    def instances(self) -> Rows:
        """[instance id, Name, IP, ping status] of every managed node."""
        from ssmshell.aws import targets

        def fetch(aws: Any) -> Rows:
            infos = targets._managed_nodes(aws)
            names = targets._ec2_names(aws, [i["InstanceId"] for i in infos])
            nodes = sorted((targets._ssm_node(i, names.get(i["InstanceId"], ""))
                            for i in infos), key=targets._Node.sort_key)
            return [[n.instance_id, n.name, n.ip, n.ping] for n in nodes]

        return self.get("instances", fetch)



# ----------------------------------------------------------------------- helpers


def _params(ctx: click.Context) -> dict[str, Any]:
    """Parameters given so far on the command line (this command's, then its parents')."""
    params: dict[str, Any] = {}
    node: click.Context | None = ctx
    while node is not None:
        for key, value in (node.params or {}).items():
            if value not in (None, (), "") and key not in params:
                params[key] = value
        node = node.parent
    return params


def _silence_stderr() -> None:
    """In a completion process, send everything written on fd 2 to /dev/null."""
    if not os.environ.get(COMPLETE_VAR):
        return
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)


def _matching(items: list[CompletionItem], incomplete: str) -> list[CompletionItem]:
    """The items starting with ``incomplete`` (case-insensitively when none does)."""
    exact = [i for i in items if str(i.value).startswith(incomplete)]
    if exact or not incomplete:
        return exact
    lower = incomplete.lower()
    return [i for i in items if str(i.value).lower().startswith(lower)]


Callback = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def _safe(func: Callable[[click.Context, str], list[CompletionItem]]) -> Callback:
    """A ``shell_complete`` callback that is quiet and turns every failure into nothing."""

    @functools.wraps(func)
    def callback(ctx: click.Context, param: click.Parameter,
                 incomplete: str) -> list[CompletionItem]:
        _silence_stderr()
        try:
            return _matching(func(ctx, incomplete), incomplete)
        except BaseException:  # KeyboardInterrupt included: the shell just gets nothing
            return []

    return callback


def _item(value: str, help_text: str = "") -> CompletionItem:
    return CompletionItem(value, help=help_text or None)


# ----------------------------------------------------------------------- the callbacks


@_safe
def complete_clusters(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """``--cluster``: cluster names."""
    return [_item(name) for name in _Lookup(ctx).clusters()]


@_safe
def complete_services(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """``--service``: services of the ``--cluster`` given (or of the only cluster)."""
    lookup = _Lookup(ctx)
    cluster = lookup.cluster(ctx)
    return [_item(name) for name in lookup.services(cluster)] if cluster else []


@_safe
def complete_tasks(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """``--task``: running task ids (of ``--service`` if given); help = service/family."""
    lookup = _Lookup(ctx)
    cluster = lookup.cluster(ctx)
    if not cluster:
        return []
    service = _params(ctx).get("service")
    return [_item(task, help_text) for task, help_text in
            lookup.tasks(cluster, str(service) if service else None)]


@_safe
def complete_containers(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """``--container``: containers of the ``--task`` given; help = image, status, agent."""
    task = _params(ctx).get("task")
    if not task:
        return []
    lookup = _Lookup(ctx)
    cluster = lookup.cluster(ctx)
    if not cluster:
        return []
    return [_item(name, help_text) for name, help_text in lookup.containers(cluster, str(task))]


@_safe
def complete_instances(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """TARGET: instance ids (help = Name, IP) and Name tags (help = id, IP)."""
    rows = _Lookup(ctx).instances()
    items = []
    for instance_id, name, ip, ping in rows:
        extra = [] if ping in ("", "Online") else [ping]
        items.append(_item(instance_id, "  ".join(f for f in (name, ip, *extra) if f)))
    if incomplete.startswith(("i-", "mi-")):
        return items
    by_name: dict[str, list[list[str]]] = {}
    for row in rows:
        if row[1]:
            by_name.setdefault(row[1], []).append(row)
    for name, same in by_name.items():
        if len(same) == 1:
            instance_id, _, ip, ping = same[0]
            extra = [] if ping in ("", "Online") else [ping]
            items.append(_item(name, "  ".join(f for f in (instance_id, ip, *extra) if f)))
        else:
            items.append(_item(name, f"{len(same)} instances"))
    return items


def _aws_config_files() -> list[tuple[Path, bool]]:
    """(path, is the config file) of the shared AWS config and credentials files."""
    config = os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config"
    credentials = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
    return [(Path(config).expanduser(), True), (Path(credentials).expanduser(), False)]


def available_profiles() -> dict[str, str]:
    """Profile name → its region (or ""), from the AWS config and credentials files.

    Read with :mod:`configparser` (what botocore's ``available_profiles`` lists, without
    importing botocore).
    """
    import configparser

    profiles: dict[str, str] = {}
    for path, is_config in _aws_config_files():
        parser = configparser.RawConfigParser(strict=False, interpolation=None)
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        for section in parser.sections():
            name = section.strip()
            if is_config:
                if name.startswith("profile "):
                    name = name[len("profile "):].strip()
                elif name != "default":
                    continue  # sso-session, services, …
            if name and " " not in name:
                region = parser.get(section, "region", fallback="") or ""
                if not profiles.get(name):
                    profiles[name] = region.strip()
    return profiles


@_safe
def complete_profiles(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """``--profile``: profiles of the AWS config files; help = the profile's region."""
    return [_item(name, region) for name, region in sorted(available_profiles().items())]


#: Used when botocore's endpoint data cannot be read.
_FALLBACK_REGIONS = ("us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1",
                     "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1", "ap-northeast-1",
                     "ap-northeast-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2",
                     "ca-central-1", "sa-east-1")


def available_regions() -> list[tuple[str, str]]:
    """(region, description) of every partition botocore knows (no network)."""
    try:
        import botocore.loaders

        data = botocore.loaders.create_loader().load_data("endpoints")
        regions = [(name, str(info.get("description", "")))
                   for partition in data["partitions"]
                   for name, info in partition["regions"].items()]
    except Exception:
        regions = []
    return regions or [(name, "") for name in _FALLBACK_REGIONS]


@_safe
def complete_regions(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """``--region``: region names; help = the region's description."""
    return [_item(name, description) for name, description in available_regions()]


@_safe
def complete_aliases(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """Alias names from the config file; help = what they point at."""
    config = _config()
    if config is None:
        return []
    items = []
    for name, alias in sorted(config.aliases.items()):
        parts = [alias.target] if alias.target else [
            p for p in (alias.cluster, alias.service or alias.task, alias.container) if p]
        items.append(_item(name, "/".join(p for p in parts if p)))
    return items
