"""ssmshell's own config file: defaults, aliases and completion settings.

The file is ``$SSMSHELL_CONFIG`` if set, else ``$XDG_CONFIG_HOME/ssmshell/config.toml``
(``~/.config/ssmshell/config.toml`` without XDG_CONFIG_HOME). A missing file is an
empty config. Example::

    [defaults]
    profile = "prod"           # used when neither --profile nor AWS_PROFILE is given
    region = "eu-west-1"       # used when neither --region nor AWS_REGION/AWS_DEFAULT_REGION
    command = "/bin/bash"      # the default shell for 'ssmshell exec'
    container = "app"          # the container to pick when a task has several

    [completion]
    ttl = 60                   # seconds completion results are cached
    timeout = 2                # seconds completion may spend asking AWS

    [alias.api]                # 'api' = an ECS target ...
    cluster = "prod"
    service = "api"
    container = "app"
    command = "bash -l"

    [alias.bastion]            # ... or an instance
    target = "bastion-1"
    profile = "ops"

TOML is read with :mod:`tomllib` (Python ≥ 3.11) or the ``tomli`` package (3.10).
Every problem is a :class:`~ssmshell.errors.UserError` with one line naming the file.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssmshell.errors import Exit, UserError

#: The environment variable naming the config file (overrides the XDG location).
CONFIG_ENV = "SSMSHELL_CONFIG"
#: Completion cache lifetime and AWS time budget, unless configured.
DEFAULT_COMPLETION_TTL = 60.0
DEFAULT_COMPLETION_TIMEOUT = 2.0

_ALIAS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DEFAULT_KEYS = ("profile", "region", "command", "container")
_ALIAS_KEYS = ("cluster", "service", "task", "container", "command", "target", "profile",
               "region")
_COMPLETION_KEYS = ("ttl", "timeout")
_TABLES = ("defaults", "alias", "completion")


@dataclass(frozen=True)
class Defaults:
    """``[defaults]``: what applies when the command line (and environment) says nothing."""

    profile: str | None = None
    region: str | None = None
    #: The default shell/command for ``ssmshell exec`` (instead of ``/bin/sh``).
    command: str | None = None
    #: The container to use when a task has several and none is given.
    container: str | None = None


@dataclass(frozen=True)
class Alias:
    """``[alias.NAME]``: an ECS target (cluster/service/task/container/command) or an
    instance (``target``), optionally with its own profile and region."""

    name: str
    cluster: str | None = None
    service: str | None = None
    task: str | None = None
    container: str | None = None
    command: str | None = None
    target: str | None = None
    profile: str | None = None
    region: str | None = None

    @property
    def is_ecs(self) -> bool:
        """An ECS Exec alias (``cluster``/``service``/``task``/``container``)."""
        return self.target is None


@dataclass(frozen=True)
class Config:
    """The parsed config file (:func:`load_config`)."""

    #: The file read, or None when there was none.
    path: Path | None = None
    defaults: Defaults = field(default_factory=Defaults)
    aliases: dict[str, Alias] = field(default_factory=dict)
    #: How long completion results are cached, in seconds (0 = no cache).
    completion_ttl: float = DEFAULT_COMPLETION_TTL
    #: How long completion may wait for AWS, in seconds.
    completion_timeout: float = DEFAULT_COMPLETION_TIMEOUT

    def alias(self, name: str) -> Alias | None:
        """The alias called ``name``, or None."""
        return self.aliases.get(name)

    def profile(self, given: str | None) -> str | None:
        """The profile to use: ``given`` (``--profile``), else None when AWS_PROFILE is
        set (boto3 reads it), else ``defaults.profile``."""
        if given:
            return given
        if os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE"):
            return None
        return self.defaults.profile

    def region(self, given: str | None) -> str | None:
        """The region to use: ``given`` (``--region``), else None when AWS_REGION or
        AWS_DEFAULT_REGION is set (boto3 reads them), else ``defaults.region``."""
        if given:
            return given
        if os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
            return None
        return self.defaults.region


def config_path() -> Path:
    """Where the config file is (whether or not it exists)."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "ssmshell" / "config.toml"


def _toml_loads(text: str) -> Any:
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            raise _ConfigProblem("reading TOML needs Python 3.11 or the 'tomli' "
                                 "package") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _ConfigProblem(f"invalid TOML: {exc}") from None


class _ConfigProblem(Exception):
    """A problem with the file's content; becomes a UserError naming the file."""


def load_config(path: str | Path | None = None) -> Config:
    """Read and check the config file.

    Args:
        path: the file; None = :func:`config_path` (an absent default file is fine).

    Returns:
        The config (all defaults when there is no file).

    Raises:
        UserError: (:attr:`Exit.USAGE`) the file cannot be read, is not TOML, or has
            unknown tables/keys or values of the wrong type, as
            ``config <file>: <problem>``.
    """
    explicit = path is not None or bool(os.environ.get(CONFIG_ENV))
    file = Path(path) if path is not None else config_path()
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise UserError(f"config {file}: no such file", Exit.USAGE) from None
        return Config()
    except OSError as exc:
        raise UserError(f"config {file}: cannot read it: {exc.strerror}", Exit.USAGE) from None
    try:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _ConfigProblem("not UTF-8 text") from None
        return _parse(_toml_loads(text), file)
    except _ConfigProblem as exc:
        message = " ".join(str(exc).split())  # one line
        raise UserError(f"config {file}: {message}", Exit.USAGE) from None


def _strings(table: Any, where: str, keys: tuple[str, ...]) -> dict[str, str]:
    if not isinstance(table, dict):
        raise _ConfigProblem(f"{where} must be a table")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise _ConfigProblem(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(keys)})")
    out: dict[str, str] = {}
    for key, value in table.items():
        if not isinstance(value, str) or not value.strip():
            raise _ConfigProblem(f"{where}: {key} must be a non-empty string")
        out[key] = value
    return out


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < 0:
        raise _ConfigProblem(f"{where} must be a number of seconds ≥ 0")
    return float(value)


def _parse(data: dict[str, Any], file: Path) -> Config:
    unknown = sorted(set(data) - set(_TABLES))
    if unknown:
        raise _ConfigProblem(f"unknown table or key {unknown[0]!r} (known: "
                             f"{', '.join(f'[{t}]' for t in _TABLES)})")
    defaults = Defaults(**_strings(data.get("defaults", {}), "[defaults]", _DEFAULT_KEYS))

    completion = data.get("completion", {})
    if not isinstance(completion, dict):
        raise _ConfigProblem("[completion] must be a table")
    bad = sorted(set(completion) - set(_COMPLETION_KEYS))
    if bad:
        raise _ConfigProblem(f"[completion]: unknown key {bad[0]!r} (known: "
                             f"{', '.join(_COMPLETION_KEYS)})")
    ttl = _seconds(completion.get("ttl", DEFAULT_COMPLETION_TTL), "[completion] ttl")
    timeout = _seconds(completion.get("timeout", DEFAULT_COMPLETION_TIMEOUT),
                       "[completion] timeout")

    aliases_table = data.get("alias", {})
    if not isinstance(aliases_table, dict):
        raise _ConfigProblem("[alias] must hold tables, e.g. [alias.api]")
    aliases: dict[str, Alias] = {}
    for name, table in aliases_table.items():
        where = f"[alias.{name}]"
        if not _ALIAS_NAME.match(name):
            raise _ConfigProblem(f"{where}: bad alias name (letters, digits, '.', '_', '-')")
        values = _strings(table, where, _ALIAS_KEYS)
        ecs = [k for k in ("cluster", "service", "task", "container") if k in values]
        if "target" in values and ecs:
            raise _ConfigProblem(f"{where}: give target (an instance) or cluster/service/"
                                 "task/container (ECS), not both")
        if "target" not in values and not ecs:
            raise _ConfigProblem(f"{where}: needs target (an instance) or cluster/service/"
                                 "task (ECS)")
        if "service" in values and "task" in values:
            raise _ConfigProblem(f"{where}: give service or task, not both")
        aliases[name] = Alias(name=name, **values)
    return Config(path=file, defaults=defaults, aliases=aliases, completion_ttl=ttl,
                  completion_timeout=timeout)


# ------------------------------------------------------------------------- the command


def _toml_string(value: str) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string


def format_config(config: Config) -> str:
    """The config as normalized TOML (what ``ssmshell config`` prints)."""
    where = str(config.path) if config.path else f"{config_path()} (absent: built-in defaults)"
    lines = [f"# {where}", "[defaults]"]
    for key in _DEFAULT_KEYS:
        value = getattr(config.defaults, key)
        if value is not None:
            lines.append(f"{key} = {_toml_string(value)}")
    lines += ["", "[completion]", f"ttl = {config.completion_ttl:g}",
              f"timeout = {config.completion_timeout:g}"]
    for name, alias in sorted(config.aliases.items()):
        lines += ["", f"[alias.{name}]"]
        lines += [f"{key} = {_toml_string(getattr(alias, key))}" for key in _ALIAS_KEYS
                  if getattr(alias, key) is not None]
    return "\n".join(lines)


def _config_command() -> Any:
    import click

    @click.command("config")
    @click.option("--path", "path_only", is_flag=True, help="Print only the file's path.")
    def config_cmd(path_only: bool) -> None:
        """Show the config file (defaults, completion settings, aliases), checked.

        The file is $SSMSHELL_CONFIG, else $XDG_CONFIG_HOME/ssmshell/config.toml
        (~/.config/ssmshell/config.toml); see the README for its format.
        """
        import sys

        if path_only:
            click.echo(str(config_path()))
            return
        try:
            click.echo(format_config(load_config()))
        except UserError as exc:
            click.echo(f"ssmshell: {exc.message}", err=True)
            sys.exit(exc.exit_code)

    return config_cmd


#: ``ssmshell config`` (click is imported here only because cli.py imports it anyway).
config_cmd = _config_command()
