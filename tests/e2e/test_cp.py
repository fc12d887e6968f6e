"""``ssmshell cp`` against the local Session Manager: files (one session and parallel
parts) and directory trees, to and from an instance and an ECS container, verified by
SHA-256; mismatches and errors.

The agent emulator runs the remote scripts on this machine, so a "remote" path is a
path here: what was copied is compared byte for byte and by SHA-256."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ssmshell.copy import (
    LocalPath,
    RemotePath,
    ScriptOutput,
    TarPlan,
    compare_manifests,
    parse_manifest,
    parse_spec,
    remote_path_expr,
)
from ssmshell.errors import UserError
from ssmshell.local.server import LocalSessionManager
from tests.conftest import ssmshell_argv

TIMEOUT = 90
INSTANCE = "demo-web"
ECS = "ecs:demo/0a1b2c3d4e5f60718293a4b5c6d7e8f9/app"
TARGETS = [INSTANCE, ECS]
IDS = ["instance", "ecs"]
BIG = 50 * 1000 * 1000


def cp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(ssmshell_argv("cp", *args), env=env, capture_output=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def leftovers(*dirs: Path) -> list[str]:
    """Temporary files or directories of cp left anywhere under ``dirs``."""
    return [str(p) for d in dirs for p in d.rglob("*") if "ssmshell-part" in p.name]


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    path.write_bytes(os.urandom(BIG))
    return path


def make_tree(root: Path) -> dict[str, bytes]:
    """Nested directories, an empty file and directory, binary files, spaces, a symlink."""
    files = {
        "top.txt": b"hello\r\nworld\n",
        "empty": b"",
        "with space/file name with spaces.bin": bytes(range(256)) * 40,
        "a/b/c/deep.bin": os.urandom(300_000),
        "a/b/ctrl.bin": b"\x03\x04\x1a\x1c\x00\xff" * 1000,
        "a/run.sh": b"#!/bin/sh\necho hi\n",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "a/run.sh").chmod(0o755)
    (root / "empty dir").mkdir()
    (root / "link").symlink_to("top.txt")
    return files


def assert_tree(root: Path, files: dict[str, bytes]) -> None:
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    for name, data in files.items():
        assert (root / name).read_bytes() == data, name
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and not p.is_symlink()) == sorted(files)
    assert (root / "empty dir").is_dir()
    assert os.readlink(root / "link") == "top.txt"
    assert os.stat(root / "a/run.sh").st_mode & stat.S_IXUSR


# ---------------------------------------------------------------------------- files


@pytest.mark.parametrize("target,upload_args,upload_sessions",
                         [(INSTANCE, (), 1), (ECS, ("--parallel", "4"), 4)], ids=IDS)
def test_big_file_both_ways(local_sm: LocalSessionManager, cli_env: dict[str, str],
                            big_file: Path, tmp_path: Path, target: str,
                            upload_args: tuple[str, ...], upload_sessions: int) -> None:
    """50 MB up (one session by default, or four) and down (four sessions by default),
    checksums equal."""
    remote = tmp_path / "remote"
    remote.mkdir()
    proc = cp(cli_env, *upload_args, str(big_file), f"{target}:{remote}/copy.bin")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"" and proc.stderr == b""  # no progress line without a terminal
    assert sha(remote / "copy.bin") == sha(big_file)
    assert len(local_sm.registry.sessions()) == upload_sessions
    back = tmp_path / "back.bin"
    proc = cp(cli_env, f"{target}:{remote}/copy.bin", str(back))
    assert proc.returncode == 0, proc.stderr
    assert sha(back) == sha(big_file)
    assert len(local_sm.registry.sessions()) - upload_sessions == 4
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_file_one_session(local_sm: LocalSessionManager, cli_env: dict[str, str],
                          tmp_path: Path, target: str) -> None:
    """--parallel 1, into an existing directory (both sides), the x bit kept."""
    src = tmp_path / "tool"
    src.write_bytes(os.urandom(9_000_000))
    src.chmod(0o755)
    remote = tmp_path / "remote"
    remote.mkdir()
    proc = cp(cli_env, "--parallel", "1", str(src), f"{target}:{remote}/")
    assert proc.returncode == 0, proc.stderr
    assert (remote / "tool").read_bytes() == src.read_bytes()
    assert os.stat(remote / "tool").st_mode & 0o777 == 0o755
    local = tmp_path / "local"
    local.mkdir()
    proc = cp(cli_env, "--parallel", "1", f"{target}:{remote}/tool", str(local))
    assert proc.returncode == 0, proc.stderr
    assert (local / "tool").read_bytes() == src.read_bytes()
    assert os.stat(local / "tool").st_mode & stat.S_IXUSR
    assert len(local_sm.registry.sessions()) == 2
    assert leftovers(tmp_path) == []


def test_empty_file_and_home(local_sm: LocalSessionManager, cli_env: dict[str, str],
                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty file, and ``~/`` meaning the remote $HOME."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # the agent's environment (same process)
    src = tmp_path / "empty"
    src.write_bytes(b"")
    assert cp(cli_env, str(src), f"{INSTANCE}:~/e").returncode == 0
    assert (home / "e").read_bytes() == b""
    proc = cp(cli_env, f"{ECS}:~/e", str(tmp_path / "e2"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "e2").read_bytes() == b""


# ---------------------------------------------------------------------- directories


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_directory_tree_both_ways(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                  tmp_path: Path, target: str) -> None:
    src = tmp_path / "tree"
    files = make_tree(src)
    remote = tmp_path / "remote"
    proc = cp(cli_env, str(src), f"{target}:{remote}")  # DEST does not exist: it is made
    assert proc.returncode == 0, proc.stderr
    assert_tree(remote, files)
    proc = cp(cli_env, str(src), f"{target}:{remote}")  # DEST exists: DEST/tree
    assert proc.returncode == 0, proc.stderr
    assert_tree(remote / "tree", files)
    back = tmp_path / "back"
    proc = cp(cli_env, f"{target}:{remote}/tree", str(back))
    assert proc.returncode == 0, proc.stderr
    assert_tree(back, files)
    proc = cp(cli_env, f"{target}:{remote}/tree", str(back))  # into it: back/tree
    assert proc.returncode == 0, proc.stderr
    assert_tree(back / "tree", files)
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------- mismatch


@pytest.fixture
def lying_sha256sum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``sha256sum`` first on the agent's PATH that reports a wrong digest (the
    agent emulator runs in this process and passes its environment to the PTY)."""
    bin_dir = tmp_path / "lying-bin"
    bin_dir.mkdir()
    fake = bin_dir / "sha256sum"
    fake.write_text("#!/bin/sh\ncat >/dev/null\necho " + "0" * 64 + "  -\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize("parallel", ["1", "4"])
def test_upload_mismatch_is_an_error_and_nothing_is_left(
        local_sm: LocalSessionManager, cli_env: dict[str, str], tmp_path: Path,
        lying_sha256sum: None, parallel: str) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(9_000_000))
    remote = tmp_path / "remote"
    remote.mkdir()
    proc = cp(cli_env, "--parallel", parallel, str(src), f"{ECS}:{remote}/data.bin")
    assert proc.returncode == 1
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"ssmshell: checksum mismatch for {ECS}:{remote}/data.bin"), lines
    assert f"received SHA-256 {'0' * 16}…; the copy was removed" in lines[0]
    assert list(remote.iterdir()) == []


def test_download_mismatch_is_an_error_and_nothing_is_left(
        local_sm: LocalSessionManager, cli_env: dict[str, str], tmp_path: Path,
        lying_sha256sum: None) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(100_000))
    local = tmp_path / "local"
    local.mkdir()
    proc = cp(cli_env, f"{INSTANCE}:{src}", str(local / "data.bin"))
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith(f"ssmshell: checksum mismatch for {INSTANCE}:{src}")
    assert proc.stderr.count(b"\n") == 1
    assert list(local.iterdir()) == []


def test_directory_mismatch(local_sm: LocalSessionManager, cli_env: dict[str, str],
                            tmp_path: Path, lying_sha256sum: None) -> None:
    src = tmp_path / "tree"
    make_tree(src)
    proc = cp(cli_env, f"{INSTANCE}:{src}", str(tmp_path / "back"))
    assert proc.returncode == 1
    assert b"checksum mismatch copying" in proc.stderr
    assert not (tmp_path / "back").exists() and leftovers(tmp_path) == []


# --------------------------------------------------------------- a minimal target


@pytest.fixture
def minimal_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's PATH holds only what a small container has: no sha256sum."""
    bin_dir = tmp_path / "minimal-bin"
    bin_dir.mkdir()
    for tool in ("sh", "cat", "head", "tail", "wc", "tar", "find", "mv", "rm", "mkdir",
                 "chmod", "stty", "sleep"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_without_sha256sum_sizes_are_checked(local_sm: LocalSessionManager,
                                             cli_env: dict[str, str], tmp_path: Path,
                                             minimal_path: None, target: str) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(9_000_000))
    remote = tmp_path / "remote"
    remote.mkdir()
    proc = cp(cli_env, str(src), f"{target}:{remote}/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b"ssmshell: the target has no sha256sum: only sizes were compared\n"
    assert sha(remote / "data.bin") == sha(src)
    proc = cp(cli_env, f"{target}:{remote}/data.bin", str(tmp_path / "back.bin"))
    assert proc.returncode == 0, proc.stderr
    assert sha(tmp_path / "back.bin") == sha(src)
    tree = tmp_path / "tree"
    files = make_tree(tree)
    assert cp(cli_env, str(tree), f"{target}:{remote}/tree").returncode == 0
    proc = cp(cli_env, f"{target}:{remote}/tree", str(tmp_path / "tree2"))
    assert proc.returncode == 0, proc.stderr
    assert_tree(tmp_path / "tree2", files)


# --------------------------------------------------------------------------- errors


def test_missing_local_source(local_sm: LocalSessionManager, cli_env: dict[str, str],
                              tmp_path: Path) -> None:
    proc = cp(cli_env, str(tmp_path / "nope"), f"{INSTANCE}:/tmp/x")
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"ssmshell: {tmp_path}/nope: no such file or directory\n"
    assert local_sm.registry.sessions() == []


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_missing_remote_source(local_sm: LocalSessionManager, cli_env: dict[str, str],
                               tmp_path: Path, target: str) -> None:
    proc = cp(cli_env, f"{target}:{tmp_path}/nope", str(tmp_path / "x"))
    assert proc.returncode == 1
    assert proc.stderr.decode() == (f"ssmshell: {target}:{tmp_path}/nope: "
                                    "no such file or directory\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_upload_into_missing_remote_directory(local_sm: LocalSessionManager,
                                              cli_env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    proc = cp(cli_env, str(src), f"{INSTANCE}:{tmp_path}/no/such/dir/f")
    assert proc.returncode == 1
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ssmshell: {INSTANCE}:{tmp_path}/no/")
    assert "Traceback" not in proc.stderr.decode()
    proc = cp(cli_env, str(src), f"{ECS}:{tmp_path}/nodir/")  # a trailing / wants a directory
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"ssmshell: {ECS}:{tmp_path}/nodir/: no such directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.parametrize("args,message", [
    (("a", "b"), "neither SRC nor DEST is remote"),
    (("./x:y", "/tmp/a:b"), "neither SRC nor DEST is remote"),
    ((f"{INSTANCE}:/a", f"{ECS}:/b"), "between two remote paths"),
    (("ecs:demo:/x", "y"), "bad ECS target"),
    (("ecs:demo", "y"), "bad ECS path"),
])
def test_usage_errors(local_sm: LocalSessionManager, cli_env: dict[str, str],
                      args: tuple[str, str], message: str) -> None:
    proc = cp(cli_env, *args)
    assert proc.returncode == 2
    assert message in proc.stderr.decode()
    assert local_sm.registry.sessions() == []


def test_progress_on_a_terminal(local_sm: LocalSessionManager, cli_env: dict[str, str],
                                tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(2_000_000))
    child = pexpect.spawn(sys.executable, ["-m", "ssmshell", "cp", str(src),
                                           f"{INSTANCE}:{tmp_path}/copy.bin"],
                          env=cli_env, timeout=TIMEOUT)
    child.expect(pexpect.EOF)
    child.close()
    text = child.before.decode()
    assert child.exitstatus == 0, text
    assert "MB/s" in text and "100%" in text and "SHA-256 verified" in text
    assert (tmp_path / "copy.bin").read_bytes() == src.read_bytes()


# ------------------------------------------------------------------------ functions


def test_parse_spec() -> None:
    assert parse_spec("web-1:/tmp/x") == RemotePath("web-1", "/tmp/x", "web-1:/tmp/x")
    assert parse_spec("i-0123456789abcdef0:") == RemotePath("i-0123456789abcdef0", "",
                                                            "i-0123456789abcdef0:")
    assert parse_spec(f"{ECS}:/a:b") == RemotePath(ECS, "/a:b", f"{ECS}:/a:b")
    for local in ("plain", "./x:y", "/abs/p:q", "dir/file:1", ":x"):
        assert parse_spec(local) == LocalPath(local)
    with pytest.raises(UserError):
        parse_spec("ecs:demo/task")


def test_remote_path_expr() -> None:
    assert remote_path_expr("/tmp/a b/") == "'/tmp/a b'"
    assert remote_path_expr("") == "."
    assert remote_path_expr("/") == "/"
    assert remote_path_expr("~") == '"$HOME"'
    assert remote_path_expr("~/x'y") == '"$HOME"/' + "'x'\"'\"'y'"


def test_compare_manifests() -> None:
    sent = {"a": "sha256:" + "1" * 64, "b c": "sha256:" + "2" * 64}
    assert compare_manifests(sent, dict(sent, extra="sha256:" + "3" * 64)) == []
    problems = compare_manifests(sent, {"a": "sha256:" + "9" * 64})
    assert problems == [f"a: SHA-256 {'1' * 16}… sent, SHA-256 {'9' * 16}… received",
                        "b c: missing"]


def test_parse_manifest() -> None:
    lines = [b"a" * 64 + b"  ./x y", b"\\" + b"b" * 64 + b"  ./new\\nline\\\\z",
             b"c" * 64 + b" *./bin"]
    assert parse_manifest("sha256", lines) == {
        "x y": "sha256:" + "a" * 64, "new\nline\\z": "sha256:" + "b" * 64,
        "bin": "sha256:" + "c" * 64}
    assert parse_manifest("size", [b"   12 ./a b", b"0 ./e", b"   12 total"]) == {
        "a b": "size:12", "e": "size:0"}


def test_script_output_framing_in_any_pieces() -> None:
    """The body is exact however the output is cut, even when it holds the token."""
    token = "SSMCP" + "ab" * 16
    body = os.urandom(5000) + token.encode() + b" 0 x\n" + os.urandom(3000)
    stream = (b"noise\nF 1 2 -\n" + body + token.encode() + b" 0 sha256:" + b"f" * 64 +
              b" \n")
    for step in (1, 7, 1024, len(stream)):
        got = bytearray()
        headers: list[str] = []
        out = ScriptOutput(token, on_header=headers.append, sink=got.extend)
        for at in range(0, len(stream), step):
            out.feed(stream[at:at + step])
        trailer = out.finish()
        assert trailer is not None and trailer.status == 0
        assert trailer.digest == "sha256:" + "f" * 64
        assert bytes(got) == body and headers == ["F 1 2 -"]


def test_tar_plan_size_is_exact(tmp_path: Path) -> None:
    import io
    import tarfile

    files = make_tree(tmp_path / "t")
    (tmp_path / "t" / ("long" * 40)).write_bytes(b"long name")  # a GNU long-name header
    plan = TarPlan.of(str(tmp_path / "t"), lambda line: None)
    data = b"".join(plan.chunks())
    assert len(data) == plan.size and plan.size % 10240 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = archive.getnames()
    assert set(files) | {"long" * 40, "link", "empty dir"} <= set(names)
    assert plan.sent["a/b/c/deep.bin"] == "sha256:" + hashlib.sha256(
        files["a/b/c/deep.bin"]).hexdigest()
