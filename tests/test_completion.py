"""Shell completion, driven the way shells drive it: ``ssmshell`` as a subprocess with
``_SSMSHELL_COMPLETE=<shell>_complete``, COMP_WORDS and COMP_CWORD, against the local
Session Manager; and a real bash on a PTY with the checked-in script sourced."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

import ssmshell
from ssmshell.completion import SHELLS, completion_source
from ssmshell.local.config import Cluster
from ssmshell.local.server import LocalSessionManager
from tests.conftest import ssmshell_argv

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = {"bash": "ssmshell.bash", "zsh": "_ssmshell", "fish": "ssmshell.fish"}
WEB_TASK = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
WORKER_TASK = "1b2c3d4e5f60718293a4b5c6d7e8f90a"
LEGACY_TASK = "2c3d4e5f60718293a4b5c6d7e8f90a1b"


@dataclass
class Completed:
    values: list[str]
    helps: dict[str, str]
    stdout: str
    stderr: str
    returncode: int
    elapsed: float


def complete(env: dict[str, str], line: str, timeout: float = 30) -> Completed:
    """Complete the last word of ``line`` as zsh asks (values and help texts).

    A ``line`` ending in a space completes a new, empty word.
    """
    words = shlex.split(line)
    cword = len(words) if line.endswith(" ") else len(words) - 1
    run_env = dict(env, COMP_WORDS=line, COMP_CWORD=str(cword),
                   _SSMSHELL_COMPLETE="zsh_complete")
    started = time.monotonic()
    result = subprocess.run(ssmshell_argv(), env=run_env, capture_output=True, text=True,
                            timeout=timeout)
    elapsed = time.monotonic() - started
    lines = result.stdout.split("\n")
    values: list[str] = []
    helps: dict[str, str] = {}
    for n in range(0, len(lines) - 2, 3):  # type, value, help ("_" = none)
        kind, value, help_text = lines[n:n + 3]
        assert kind == "plain", result.stdout
        values.append(value)
        helps[value] = "" if help_text == "_" else help_text
    return Completed(values, helps, result.stdout, result.stderr, result.returncode, elapsed)


def bash_complete(env: dict[str, str], line: str) -> list[str]:
    """Values as bash's completion function gets them (``type,value`` lines)."""
    words = shlex.split(line)
    cword = len(words) if line.endswith(" ") else len(words) - 1
    result = subprocess.run(ssmshell_argv(), env=dict(
        env, COMP_WORDS=line, COMP_CWORD=str(cword), _SSMSHELL_COMPLETE="bash_complete"),
        capture_output=True, text=True, timeout=30)
    assert result.stderr == ""
    return [row.split(",", 1)[1] for row in result.stdout.splitlines() if row]


@pytest.fixture
def env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """cli_env with a private cache and config directory."""
    out = {k: v for k, v in cli_env.items() if not k.startswith("SSMSHELL_")}
    out["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    out["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    out["AWS_EC2_METADATA_DISABLED"] = "true"
    return out


# ---------------------------------------------------------------------------- scripts


@pytest.mark.parametrize("shell", SHELLS)
def test_checked_in_scripts_are_what_the_command_prints(shell: str) -> None:
    checked_in = (REPO / "completions" / SCRIPTS[shell]).read_text()
    assert completion_source(shell) == checked_in, \
        f"regenerate: ssmshell completion {shell} > completions/{SCRIPTS[shell]}"
    printed = subprocess.run(ssmshell_argv("completion", shell), capture_output=True,
                             text=True, check=True).stdout
    assert printed == checked_in
    source = subprocess.run(ssmshell_argv(), env={"_SSMSHELL_COMPLETE": f"{shell}_source",
                                                  "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True).stdout
    assert source == checked_in


def test_completion_rejects_unknown_shell() -> None:
    result = subprocess.run(ssmshell_argv("completion", "tcsh"), capture_output=True, text=True)
    assert result.returncode == 2
    assert "tcsh" in result.stderr


# ---------------------------------------------------------------------------- values


def test_clusters(env: dict[str, str]) -> None:
    got = complete(env, "ssmshell exec --cluster ")
    assert got.values == ["demo", "plain"]
    assert got.stderr == "" and got.returncode == 0
    assert complete(env, "ssmshell exec --cluster pl").values == ["plain"]
    assert bash_complete(env, "ssmshell exec --cluster ") == ["demo", "plain"]


def test_services_of_the_cluster_on_the_command_line(env: dict[str, str]) -> None:
    assert complete(env, "ssmshell exec --cluster demo --service ").values == ["web"]
    assert complete(env, "ssmshell exec --cluster plain --service ").values == ["api"]
    # Options after the one being completed count too.
    assert complete(env, "ssmshell port-forward --cluster plain --service ").values == ["api"]


def test_running_tasks_with_service_or_family_as_help(env: dict[str, str]) -> None:
    got = complete(env, "ssmshell exec --cluster demo --task ")
    assert sorted(got.values) == sorted([WEB_TASK, WORKER_TASK, LEGACY_TASK])
    assert got.helps[WEB_TASK] == "service web"
    assert got.helps[WORKER_TASK] == "family worker"
    assert got.helps[LEGACY_TASK] == "family legacy (exec disabled)"
    only_web = complete(env, "ssmshell exec --cluster demo --service web --task ")
    assert only_web.values == [WEB_TASK]
    assert complete(env, "ssmshell exec --cluster demo --task 1b").values == [WORKER_TASK]


def test_the_only_cluster_is_used_when_none_is_given(env: dict[str, str],
                                                      local_sm: LocalSessionManager) -> None:
    assert complete(env, "ssmshell exec --task ").values == []  # two clusters: no guess
    local_sm.config.tasks = [t for t in local_sm.config.tasks if t.cluster == "plain"]
    local_sm.config.clusters = [c for c in local_sm.config.clusters if c.name == "plain"]
    env = dict(env, SSMSHELL_COMPLETION_TTL="0")
    assert complete(env, "ssmshell exec --task ").values == ["3d4e5f60718293a4b5c6d7e8f90a1b2c"]


def test_containers_of_the_task(env: dict[str, str]) -> None:
    got = complete(env, f"ssmshell exec --cluster demo --task {WEB_TASK} --container ")
    assert got.values == ["app", "sidecar"]
    assert "busybox" in got.helps["app"] and "exec agent RUNNING" in got.helps["app"]
    arn = f"arn:aws:ecs:us-east-1:123456789012:task/demo/{WORKER_TASK}"
    assert complete(env, f"ssmshell exec --task {arn} --container ").values == ["worker"]
    assert complete(env, "ssmshell exec --cluster demo --container ").values == []


def test_instance_ids_and_name_tags(env: dict[str, str]) -> None:
    got = complete(env, "ssmshell start-session ")
    assert {"i-0123456789abcdef0", "mi-0123456789abcdef0", "demo-web", "on-prem-box"} \
        <= set(got.values)
    assert got.helps["i-0123456789abcdef0"] == "demo-web  10.0.0.11"
    assert got.helps["demo-web"] == "i-0123456789abcdef0  10.0.0.11"
    assert got.helps["i-00000000000000bad"] == "demo-offline  10.0.0.13  ConnectionLost"
    assert complete(env, "ssmshell start-session demo-w").values == ["demo-web"]
    ids = complete(env, "ssmshell start-session i-0").values
    assert ids and all(v.startswith("i-0") for v in ids)
    for line in ("ssmshell run ", "ssmshell proxy ", "ssmshell port-forward -L 80:80 ",
                 "ssmshell doctor "):
        assert "demo-db" in complete(env, line).values, line


def test_profiles_from_the_aws_config_files(env: dict[str, str]) -> None:
    Path(env["AWS_CONFIG_FILE"]).write_text(
        "[default]\nregion = us-east-1\n[profile prod]\nregion = eu-west-1\n"
        "[sso-session corp]\nsso_region = eu-west-1\n[profile dev]\n")
    Path(env["AWS_SHARED_CREDENTIALS_FILE"]).write_text("[ci]\naws_access_key_id = x\n")
    got = complete(env, "ssmshell exec --profile ")
    assert got.values == ["ci", "default", "dev", "prod"]
    assert got.helps["prod"] == "eu-west-1"
    assert complete(env, "ssmshell ls clusters --profile p").values == ["prod"]


def test_regions(env: dict[str, str]) -> None:
    got = complete(env, "ssmshell start-session --region eu-west-")
    assert "eu-west-1" in got.values and all(v.startswith("eu-west-") for v in got.values)
    assert got.helps["eu-west-1"]  # the description, e.g. "Europe (Ireland)"


def test_region_from_the_config_file(env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in env.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    assert complete(env, "ssmshell exec --cluster ").values == []  # no region: nothing
    config = tmp_path / "config" / "ssmshell" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[defaults]\nregion = "us-east-1"\n')
    assert complete(env, "ssmshell exec --cluster ").values == ["demo", "plain"]


# ---------------------------------------------------------------------------- robustness


def test_results_are_cached(env: dict[str, str], local_sm: LocalSessionManager) -> None:
    assert complete(env, "ssmshell exec --cluster ").values == ["demo", "plain"]
    assert any((Path(env["XDG_CACHE_HOME"]) / "ssmshell" / "completion").iterdir())
    local_sm.config.clusters.append(Cluster("extra"))
    # Within the TTL the cache answers ...
    assert complete(env, "ssmshell exec --cluster ").values == ["demo", "plain"]
    # ... and past it (here: no cache) AWS is asked again.
    assert complete(dict(env, SSMSHELL_COMPLETION_TTL="0"),
                    "ssmshell exec --cluster ").values == ["demo", "extra", "plain"]
    # With the endpoint gone, the cache still answers.
    complete(env, f"ssmshell exec --cluster demo --task {WEB_TASK} --container ")
    local_sm.stop_thread()
    got = complete(env, "ssmshell exec --cluster ")
    assert got.values == ["demo", "plain"] and got.stderr == ""
    got = complete(env, f"ssmshell exec --cluster demo --task {WEB_TASK} --container ")
    assert got.values == ["app", "sidecar"]
    # Without the cache: nothing, quietly.
    got = complete(dict(env, SSMSHELL_COMPLETION_TTL="0"), "ssmshell exec --cluster ")
    assert got.values == [] and got.stderr == "" and got.returncode == 0


def test_ttl_from_the_config_file(env: dict[str, str], local_sm: LocalSessionManager,
                                  tmp_path: Path) -> None:
    config = tmp_path / "ssmshell.toml"
    config.write_text("[completion]\nttl = 0\n")
    env = dict(env, SSMSHELL_CONFIG=str(config))
    assert complete(env, "ssmshell exec --cluster ").values == ["demo", "plain"]
    local_sm.stop_thread()
    assert complete(env, "ssmshell exec --cluster ").values == []


@pytest.fixture
def hanging_endpoint() -> Iterator[str]:
    """A TCP server that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


def test_a_hanging_endpoint_costs_at_most_the_time_limit(env: dict[str, str],
                                                         hanging_endpoint: str) -> None:
    env = dict(env, AWS_ENDPOINT_URL=hanging_endpoint)
    got = complete(env, "ssmshell exec --cluster ", timeout=15)
    assert got.values == []
    assert got.stderr == "" and got.returncode == 0
    assert got.elapsed < 3.5, got.elapsed
    got = complete(dict(env, SSMSHELL_COMPLETION_TIMEOUT="0.5"), "ssmshell start-session ",
                   timeout=15)
    assert got.values == [] and got.elapsed < 2.0, got.elapsed


def test_a_stale_entry_is_better_than_nothing_when_aws_hangs(
        env: dict[str, str], local_sm: LocalSessionManager) -> None:
    port = int(local_sm.endpoint_url.rsplit(":", 1)[1])
    assert complete(env, "ssmshell exec --cluster ").values == ["demo", "plain"]
    local_sm.stop_thread()
    try:  # the same endpoint URL, now hanging
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
    except OSError:
        pytest.fail("the endpoint's port was taken meanwhile")
    try:
        got = complete(dict(env, SSMSHELL_COMPLETION_TTL="0.001",
                            SSMSHELL_COMPLETION_TIMEOUT="0.5"), "ssmshell exec --cluster ")
        assert got.values == ["demo", "plain"] and got.stderr == ""
    finally:
        server.close()


def test_no_credentials_no_completions_no_noise(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    got = complete(env, "ssmshell exec --cluster ")
    assert got.values == [] and got.stderr == "" and got.returncode == 0


def test_a_broken_config_file_does_not_break_completion(env: dict[str, str],
                                                        tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[defaults\nregion = \n")
    got = complete(dict(env, SSMSHELL_CONFIG=str(config)), "ssmshell exec --cluster ")
    assert got.values == ["demo", "plain"] and got.stderr == ""


def test_cache_files_are_private(env: dict[str, str]) -> None:
    complete(env, "ssmshell exec --cluster ")
    folder = Path(env["XDG_CACHE_HOME"]) / "ssmshell" / "completion"
    assert folder.stat().st_mode & 0o077 == 0
    files = list(folder.iterdir())
    assert files and all(f.stat().st_mode & 0o077 == 0 for f in files)


# ---------------------------------------------------------------------------- real bash


def test_bash_tab_completion_on_a_pty(env: dict[str, str], tmp_path: Path) -> None:
    """``ssmshell exec --cluster <TAB><TAB>`` in an interactive bash lists the clusters."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.fail("bash is needed for this test")
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "ssmshell").exists():
        pytest.fail("no ssmshell script next to this interpreter (pip install -e .)")
    probe = subprocess.run([str(venv_bin / "python"), "-c",
                            "import ssmshell; print(ssmshell.__file__)"],
                           capture_output=True, text=True, check=True)
    assert Path(probe.stdout.strip()) == Path(ssmshell.__file__), "not this checkout"
    inputrc = tmp_path / "inputrc"
    inputrc.write_text("set bell-style none\nset page-completions off\n"
                       "set completion-query-items 1000\n")
    bash_env = dict(env, PATH=f"{venv_bin}:{env.get('PATH', '/usr/bin:/bin')}",
                    INPUTRC=str(inputrc), PS1="$ ", TERM="xterm")
    child = pexpect.spawn(bash, ["--norc", "--noprofile", "-i"], env=bash_env,
                          encoding="utf-8", dimensions=(24, 200), timeout=20)
    try:
        child.sendline(f"source {REPO / 'completions' / 'ssmshell.bash'}; PS1='READY$ '")
        child.expect_exact("READY$ ")
        child.send("ssmshell exec --cluster \t\t")
        child.expect(r"demo\s+plain")
        child.sendcontrol("c")
        child.expect_exact("READY$ ")
        # A single candidate is put on the line.
        child.send("ssmshell exec --cluster demo --service \t")
        child.expect_exact("--service web")
        child.sendcontrol("c")
        child.expect_exact("READY$ ")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
