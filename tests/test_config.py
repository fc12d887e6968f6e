"""ssmshell's config file (ssmshell.config): location, parsing, errors, precedence."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssmshell.config import (
    DEFAULT_COMPLETION_TIMEOUT,
    DEFAULT_COMPLETION_TTL,
    Alias,
    Config,
    Defaults,
    config_cmd,
    config_path,
    load_config,
)
from ssmshell.errors import Exit, UserError
from tests.conftest import ssmshell_argv

README = Path(__file__).resolve().parent.parent / "README.md"

EXAMPLE = """
[defaults]
profile = "prod"
region = "eu-west-1"
command = "/bin/bash"
container = "app"

[completion]
ttl = 30
timeout = 1.5

[alias.api]
cluster = "prod"
service = "api"
container = "app"
command = "bash -l"

[alias.bastion]
target = "bastion-1"
profile = "ops"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SSMSHELL_CONFIG", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION",
                 "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(UserError) as info:
        load_config(path)
    assert info.value.exit_code == Exit.USAGE
    message = info.value.message
    assert "\n" not in message
    assert message.startswith(f"config {path}: ")
    return message


# ----------------------------------------------------------------------------- location


def test_default_location_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert config_path() == tmp_path / "home" / ".config" / "ssmshell" / "config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == tmp_path / "xdg" / "ssmshell" / "config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    assert config_path() == tmp_path / "home" / ".config" / "ssmshell" / "config.toml"
    monkeypatch.setenv("SSMSHELL_CONFIG", str(tmp_path / "elsewhere.toml"))
    assert config_path() == tmp_path / "elsewhere.toml"


def test_no_file_is_an_empty_config() -> None:
    config = load_config()
    assert config == Config()
    assert config.defaults == Defaults()
    assert config.alias("api") is None
    assert config.completion_ttl == DEFAULT_COMPLETION_TTL
    assert config.completion_timeout == DEFAULT_COMPLETION_TIMEOUT


def test_a_missing_explicit_file_is_an_error(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("SSMSHELL_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(UserError, match=r"nope\.toml: no such file"):
        load_config()


def test_the_default_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "xdg" / "ssmshell" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('[defaults]\nregion = "ap-south-1"\n')
    config = load_config()
    assert config.path == path
    assert config.defaults.region == "ap-south-1"


# ----------------------------------------------------------------------------- content


def test_full_example(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE))
    assert config.defaults == Defaults("prod", "eu-west-1", "/bin/bash", "app")
    assert config.completion_ttl == 30 and config.completion_timeout == 1.5
    api = config.alias("api")
    assert api == Alias("api", cluster="prod", service="api", container="app",
                        command="bash -l")
    assert api is not None and api.is_ecs
    bastion = config.alias("bastion")
    assert bastion is not None and not bastion.is_ecs
    assert (bastion.target, bastion.profile) == ("bastion-1", "ops")


def test_the_readme_example_is_valid(tmp_path: Path) -> None:
    section = README.read_text().split("## Shell completion, config and doctor", 1)[1]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block, "the README section has a ```toml example"
    config = load_config(write(tmp_path, block.group(1)))
    assert config.aliases


@pytest.mark.parametrize("text, problem", [
    ("[defaults\n", "invalid TOML"),
    ("region = 'x'\n", "unknown table or key 'region'"),
    ("[defaults]\nregoin = 'x'\n", "[defaults]: unknown key 'regoin'"),
    ("[defaults]\nregion = 1\n", "[defaults]: region must be a non-empty string"),
    ("[defaults]\nprofile = ''\n", "profile must be a non-empty string"),
    ("defaults = 3\n", "[defaults] must be a table"),
    ("[completion]\nttl = -1\n", "[completion] ttl must be a number of seconds"),
    ("[completion]\ntimeout = 'x'\n", "[completion] timeout must be a number"),
    ("[completion]\nttl = true\n", "ttl must be a number"),
    ("[completion]\nttls = 3\n", "[completion]: unknown key 'ttls'"),
    ("[alias.api]\nclutser = 'prod'\n", "[alias.api]: unknown key 'clutser'"),
    ("[alias.api]\ncommand = 'sh'\n", "[alias.api]: needs target"),
    ("[alias.api]\ntarget = 'i-1'\ncluster = 'c'\n", "not both"),
    ("[alias.api]\ncluster = 'c'\nservice = 's'\ntask = 't'\n", "service or task, not both"),
    ("[alias.'a b']\ncluster = 'c'\n", "bad alias name"),
    ("alias = 'x'\n", "[alias] must hold tables"),
])
def test_bad_config_is_one_line_naming_file_and_problem(tmp_path: Path, text: str,
                                                        problem: str) -> None:
    assert problem in error_of(write(tmp_path, text))


def test_toml_errors_say_where(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[defaults]\nregion = "x"\nprofile\n'))
    assert "line 3" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[defaults]\nregion = '\xff'\n")
    assert "not UTF-8" in error_of(path)


# ----------------------------------------------------------------------------- precedence


def test_option_then_environment_then_defaults(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE))
    assert config.profile("cli") == "cli"
    assert config.profile(None) == "prod"
    assert config.region(None) == "eu-west-1"
    monkeypatch.setenv("AWS_PROFILE", "env")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert config.profile(None) is None  # boto3 takes AWS_PROFILE itself
    assert config.region(None) is None
    assert config.region("ca-central-1") == "ca-central-1"


# ----------------------------------------------------------------------------- command


def test_config_command_shows_the_checked_config(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    monkeypatch.setenv("SSMSHELL_CONFIG", str(path))
    result = CliRunner().invoke(config_cmd, [])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"# {path}\n")
    assert '[alias.api]\ncluster = "prod"' in result.output
    # What it prints is itself a valid config with the same content.
    again = tmp_path / "again.toml"
    again.write_text(result.output)
    reread = load_config(again)
    original = load_config(path)
    assert (reread.defaults, reread.aliases) == (original.defaults, original.aliases)
    assert CliRunner().invoke(config_cmd, ["--path"]).output == f"{path}\n"


def test_config_command_reports_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "[defaults]\nshell = 'x'\n")
    result = subprocess.run(ssmshell_argv("config"), capture_output=True, text=True,
                            env={"SSMSHELL_CONFIG": str(path), "PATH": "/usr/bin:/bin",
                                 "HOME": str(tmp_path)})
    assert result.returncode == Exit.USAGE
    assert result.stderr == f"ssmshell: config {path}: [defaults]: unknown key 'shell' " \
        "(known: profile, region, command, container)\n"
