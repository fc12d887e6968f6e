"""Command-line front end (click). Commands stay thin: they parse, delegate, map errors.

Heavy modules (boto3, websockets, prompt_toolkit, the local Session Manager)
are imported inside the commands, so ``ssmshell --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ssmshell import __version__, cliopts
from ssmshell.aws.documents import COMMAND_DOCUMENT
from ssmshell.cliopts import handle_errors, parse_ecs_target
from ssmshell.completion import (
    complete_clusters,
    complete_containers,
    complete_instances,
    complete_profiles,
    complete_regions,
    complete_services,
    complete_tasks,
)
from ssmshell.errors import Exit, UserError

F = TypeVar("F", bound=Callable[..., Any])
#: Run under this name (a link on PATH), ssmshell takes the AWS CLI's plugin calls.
PLUGIN_NAME = "session-manager-plugin"


def aws_options(func: F) -> F:
    """The shared AWS options (:func:`ssmshell.cliopts.aws_options`) and ``--debug``."""
    func = click.option("--debug", is_flag=True,
                        help="Log message headers to stderr (never payloads or tokens).")(func)
    return cliopts.aws_options(func)


def _alias(name: str | None) -> Any:
    """The config file's ``[alias.NAME]``, or None."""
    if not name:
        return None
    from ssmshell.config import load_config

    return load_config().alias(name)


def _instance_alias(target: str | None, profile: str | None, region: str | None,
                    ) -> tuple[str | None, str | None, str | None]:
    """TARGET through the config's instance aliases: (target, profile, region)."""
    alias = _alias(target)
    if alias is None or alias.is_ecs:
        return target, profile, region
    return alias.target, profile or alias.profile, region or alias.region


#: What ``exec`` runs when no --command is given.
DEFAULT_SHELL = "/bin/sh"


def ecs_target_options(func: F) -> F:
    """``--cluster``, ``--task``, ``--service``, ``--container``, completed live; what is
    missing is picked on a terminal."""
    for name, metavar, text, complete in reversed((
            ("--cluster", "CLUSTER", "ECS cluster name or ARN.", complete_clusters),
            ("--task", "TASK", "ECS task id or ARN.", complete_tasks),
            ("--service", "SERVICE", "Use a running task of this ECS service.",
             complete_services),
            ("--container", "NAME", "ECS container (needed if the task has several).",
             complete_containers))):
        func = click.option(name, metavar=metavar, help=text, shell_complete=complete)(func)
    return func


def _aws(profile: str | None, region: str | None, endpoint_url: str | None,
         debug: bool) -> Any:
    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ssmshell debug: %(name)s: %(message)s"))
        root = logging.getLogger("ssmshell")
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
    return cliopts.make_aws(profile, region, endpoint_url)


def _chooser(kind: str) -> Any:
    """The picker when a person is at a terminal, else a clear error listing candidates."""
    if sys.stdin.isatty() and sys.stderr.isatty():
        def choose(title: str, candidates: list[Any]) -> Any:
            # prompt_toolkit is imported only when a choice is really needed (start-up).
            from ssmshell.picker import pick

            return pick(title, candidates)

        return choose
    from ssmshell.aws.targets import non_interactive_chooser

    return non_interactive_chooser(kind)


def _instance(aws: Any, target: str | None) -> str:
    """Resolve TARGET (id, Name tag, IP, DNS name, or nothing → picker) to an instance id."""
    from ssmshell.aws.targets import resolve_instance

    return resolve_instance(aws, target, _chooser("an instance id"))


def _channel_options(debug: bool) -> Any:
    from ssmshell.runner import channel_options

    return channel_options(debug)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ssmshell")
def cli() -> None:
    """Session Manager shells, ECS Exec, commands and port forwards, with no plugin."""


@cli.command("start-session")
@click.argument("target", required=False, shell_complete=complete_instances)
@click.option("--document-name", metavar="DOC", help="Session document "
              "(default SSM-SessionManagerRunShell).")
@click.option("--parameters", metavar="JSON", help='Document parameters, e.g. '
              '\'{"command":["top"]}\'.')
@click.option("--reason", metavar="TEXT", help="Reason recorded with the session.")
@aws_options
@handle_errors
def start_session(target: str | None, document_name: str | None, parameters: str | None,
                  reason: str | None, profile: str | None, region: str | None,
                  endpoint_url: str | None, debug: bool) -> None:
    """Open an interactive shell on an EC2 instance or managed node.

    TARGET is an instance id (i-…, mi-…), a Name tag, a private or public IP or DNS
    name; several matches or none given → a picker (or, without a terminal, a list).
    """
    from ssmshell.aws.api import parse_parameters

    params = parse_parameters(parameters)
    target, profile, region = _instance_alias(target, profile, region)
    aws = _aws(profile, region, endpoint_url, debug)
    info = aws.start_session(_instance(aws, target), document_name, params, reason)
    sys.exit(_run_shell(aws, info, debug))


@cli.command("exec")
@click.argument("alias", required=False, metavar="[ALIAS]")
@ecs_target_options
@click.option("--command", "command", default=None,
              help="Command to run (default: an interactive /bin/sh). Without a terminal "
                   "(or with --no-tty) it runs non-interactively and ssmshell exits with "
                   "its exit status.")
@click.option("--no-tty", is_flag=True, help="Run --command non-interactively even on a "
              "terminal: output to stdout, its exit status as ssmshell's.")
@click.option("-n", "--no-stdin", is_flag=True,
              help="With --command and no terminal: do not send stdin to the command.")
@aws_options
@handle_errors
def exec_(alias: str | None, cluster: str | None, task: str | None, service: str | None,
          container: str | None, command: str | None, no_tty: bool, no_stdin: bool,
          profile: str | None, region: str | None, endpoint_url: str | None,
          debug: bool) -> None:
    """Open an interactive command in an ECS container (ECS Exec).

    ALIAS names an [alias.NAME] of the config file (options given here win). A
    missing --cluster, --task (or --service's task) or --container is picked
    interactively on a terminal; without one, the candidates are listed.
    """
    from ssmshell.aws.targets import resolve_ecs
    from ssmshell.config import load_config

    config = load_config()
    if alias:
        found = config.alias(alias)
        if found is None or not found.is_ecs:
            known = ", ".join(n for n, a in config.aliases.items() if a.is_ecs) or "none"
            raise UserError(f"no ECS alias {alias!r} in the config file (ECS aliases: "
                            f"{known})", Exit.USAGE)
        cluster, service, container = (cluster or found.cluster, service or found.service,
                                       container or found.container)
        task = task or (None if service else found.task)
        command = command or found.command
        profile, region = profile or found.profile, region or found.region
    if task and service:
        raise UserError("give --task or --service, not both", Exit.USAGE)
    aws = _aws(profile, region, endpoint_url, debug)
    choose = _chooser("--cluster/--task/--container")
    if container is None and config.defaults.container:
        try:  # the configured container, when this task has one of that name
            target = resolve_ecs(aws, cluster, task, config.defaults.container, choose,
                                 service=service)
        except UserError as exc:
            if exc.exit_code != Exit.TARGET_NOT_FOUND or "container" not in exc.message:
                raise
            target = resolve_ecs(aws, cluster, task, None, choose, service=service)
    else:
        target = resolve_ecs(aws, cluster, task, container, choose, service=service)
    shell = config.defaults.command or DEFAULT_SHELL
    if command is not None and (no_tty or not sys.stdin.isatty()):
        sys.exit(_marker_run(aws, command, _read_stdin(no_stdin), debug, ecs=target))
    info = aws.execute_command(target.cluster_arn, target.task_arn, target.container_name,
                               command or shell, target.target_id)
    sys.exit(_run_shell(aws, info, debug))


def _run_shell(aws: Any, info: Any, debug: bool) -> int:
    from ssmshell.runner import run_shell

    return run_shell(aws, info, _channel_options(debug))


def _read_stdin(no_stdin: bool) -> bytes | None:
    """All of stdin when it is not a terminal (and ``-n`` was not given), else None."""
    if no_stdin or sys.stdin is None or sys.stdin.isatty():
        return None
    try:
        return sys.stdin.buffer.read() or None
    except (OSError, ValueError):
        return None


def _marker_run(aws: Any, command: str, stdin: bytes | None, debug: bool, *,
                ecs: Any = None, instance: str | None = None) -> int:
    """Run ``command`` through the in-band marker path (a PTY session); its exit status."""
    from ssmshell.runner import notice, run_session
    from ssmshell.sessions.marker import Markers, MarkerSession, ecs_command, wrap

    markers = Markers()
    size = len(stdin) if stdin else None
    if ecs is not None:
        info = aws.execute_command(ecs.cluster_arn, ecs.task_arn, ecs.container_name,
                                   ecs_command(command, markers, size), ecs.target_id)
    else:
        info = aws.start_session(instance, "AWS-StartInteractiveCommand",
                                 {"command": [wrap(command, markers, size)]})

    async def body(channel: Any) -> int:
        return await MarkerSession(channel, markers, stdin=stdin, notice=notice).run()

    return run_session(aws, info, body, _channel_options(debug))


def _document_run(aws: Any, instance: str, command: str, document: str, debug: bool) -> int:
    """Run ``command`` in a NonInteractiveCommands session with separate streams."""
    from ssmshell.runner import notice, run_session
    from ssmshell.sessions.command import CommandSession

    # "; exit $?" keeps sh from exec-ing the last command, so that a command killed by
    # signal n reports 128+n, as in a local shell, instead of the agent's -1.
    info = aws.start_session(instance, document, {"command": [f"{command}\nexit $?"]})

    async def body(channel: Any) -> int:
        code = await CommandSession(channel, notice=notice).run()
        if code is None:
            raise UserError(f"the document {document} sent no exit code (is "
                            "separateOutputStream on? see 'ssmshell setup')", Exit.PROTOCOL)
        if code < 0:
            notice("the remote command was killed by a signal")
            return 255
        return code

    return run_session(aws, info, body, _channel_options(debug))


@cli.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("target", shell_complete=complete_instances)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--document-name", default=None, metavar="DOC",
              help=f"NonInteractiveCommands document with separateOutputStream on "
                   f"(default {COMMAND_DOCUMENT}, made by 'ssmshell setup').")
@click.option("-n", "--no-stdin", is_flag=True,
              help="Do not send stdin to the command (like ssh -n).")
@aws_options
@handle_errors
def run(target: str, command: tuple[str, ...], document_name: str | None, no_stdin: bool,
        profile: str | None, region: str | None, endpoint_url: str | None,
        debug: bool) -> None:
    """Run a command on an instance or ECS container; exit with its exit code.

    TARGET is an instance (id, Name, IP, DNS name) or ecs:CLUSTER/TASK[/CONTAINER].
    Piped stdin is sent to the command. Example: ssmshell run web-1 -- uname -a
    """
    import shlex

    from ssmshell.runner import notice

    line = shlex.join(command) if len(command) > 1 else command[0]
    stdin = _read_stdin(no_stdin)
    alias = _alias(target)
    if alias is not None:
        profile, region = profile or alias.profile, region or alias.region
    aws = _aws(profile, region, endpoint_url, debug)
    if target.startswith("ecs:") or (alias is not None and alias.is_ecs):
        from ssmshell.aws.targets import resolve_ecs

        if alias is not None and alias.is_ecs:
            cluster, task, container = alias.cluster, alias.task, alias.container
        else:
            cluster, task, container = parse_ecs_target(target)
        ecs = resolve_ecs(aws, cluster, task, container, _chooser("ecs:CLUSTER/TASK/CONTAINER"),
                          service=alias.service if alias is not None else None)
        sys.exit(_marker_run(aws, line, stdin, debug, ecs=ecs))
    if alias is not None and alias.target:
        target = alias.target
    instance = _instance(aws, target)
    if stdin is not None:
        # NonInteractiveCommands has no stdin (§9.3): only a PTY session can carry it.
        notice("stdin given: running the command on a PTY (stdout and stderr merged)")
        sys.exit(_marker_run(aws, line, stdin, debug, instance=instance))
    try:
        sys.exit(_document_run(aws, instance, line, document_name or COMMAND_DOCUMENT, debug))
    except UserError as exc:
        if document_name or exc.aws_code != "InvalidDocument":
            raise
    notice(f"document {COMMAND_DOCUMENT} not found (run 'ssmshell setup' once): using the "
           "in-band exit-status path (stdout and stderr merged)")
    sys.exit(_marker_run(aws, line, None, debug, instance=instance))


@cli.command()
@click.option("--document-name", default=COMMAND_DOCUMENT, show_default=True, metavar="DOC",
              help="Name of the document to create.")
@aws_options
@handle_errors
def setup(document_name: str, profile: str | None, region: str | None,
          endpoint_url: str | None, debug: bool) -> None:
    """Create ssmshell's session document (NonInteractiveCommands with separate stdout,
    stderr and the exit code) in the account and region; safe to run again."""
    import json

    from ssmshell.aws.documents import command_document_content

    aws = _aws(profile, region, endpoint_url, debug)
    try:
        aws.call("ssm", "create_document", "ssm:CreateDocument", Name=document_name,
                 Content=json.dumps(command_document_content()), DocumentType="Session",
                 DocumentFormat="JSON")
    except UserError as exc:
        if exc.aws_code != "DocumentAlreadyExists":
            raise
        click.echo(f"ssmshell: document {document_name} already exists in {aws.region}",
                   err=True)
        return
    click.echo(f"ssmshell: created document {document_name} in {aws.region}", err=True)


def _parse_forward(spec: str) -> tuple[Any, str | None, str]:
    """``-L`` as ssh has it: ``[BIND:]LOCAL:REMOTE_PORT`` or ``[BIND:]LOCAL:HOST:PORT``;
    LOCAL may be a unix socket path (containing ``/``)."""
    from ssmshell.sessions.ports import Listen

    parts = spec.rsplit(":", 3) if spec.count(":") <= 3 else None
    if not parts or len(parts) < 2:
        raise UserError(f"bad -L {spec!r}: use [BIND:]LOCAL:PORT or [BIND:]LOCAL:HOST:PORT",
                        Exit.USAGE)
    remote_port = parts[-1]
    host: str | None = None
    if len(parts) == 2:
        bind, local = "127.0.0.1", parts[0]
    elif len(parts) == 3:
        # LOCAL:HOST:PORT unless the first part is an address and the second a port.
        if parts[1].isdigit() and not parts[0].isdigit() and "/" not in parts[0]:
            bind, local = parts[0], parts[1]
        else:
            bind, local, host = "127.0.0.1", parts[0], parts[1]
    else:
        bind, local, host = parts[0], parts[1], parts[2]
    if not remote_port.isdigit() or not 0 < int(remote_port) < 65536:
        raise UserError(f"bad -L {spec!r}: remote port must be 1-65535", Exit.USAGE)
    if "/" in local:
        return Listen(unix_path=local), host, remote_port
    if not local.isdigit() or not 0 <= int(local) < 65536:
        raise UserError(f"bad -L {spec!r}: local port must be 0-65535 or a socket path",
                        Exit.USAGE)
    return Listen(bind or "127.0.0.1", int(local)), host, remote_port


@cli.command("port-forward")
@click.argument("target", required=False, shell_complete=complete_instances)
@click.option("-L", "forwards", multiple=True, required=True, metavar="SPEC",
              help="[BIND:]LOCAL:PORT or [BIND:]LOCAL:HOST:PORT; repeatable.")
@ecs_target_options
@aws_options
@handle_errors
def port_forward(target: str | None, forwards: tuple[str, ...], cluster: str | None,
                 task: str | None, service: str | None, container: str | None,
                 profile: str | None, region: str | None, endpoint_url: str | None,
                 debug: bool) -> None:
    """Forward local ports to ports on (or reachable from) an instance or ECS task.

    LOCAL may be 0 (any free port) or a unix socket path. For ECS give --cluster and
    --task (or --service) instead of TARGET.
    """
    from ssmshell.runner import notice, run_forwards

    specs = [_parse_forward(spec) for spec in forwards]
    if not (cluster or task or service):
        target, profile, region = _instance_alias(target, profile, region)
    aws = _aws(profile, region, endpoint_url, debug)
    if cluster or task or service:
        from ssmshell.aws.targets import resolve_ecs

        if target:
            raise UserError("give TARGET or --cluster/--task, not both", Exit.USAGE)
        # Port sessions to ECS go through ssm:StartSession on the §2.3 target string.
        target = resolve_ecs(aws, cluster, task, container,
                             _chooser("--cluster/--task/--container"), service=service).target_id
    else:
        target = _instance(aws, target)
    infos = []
    for listen, host, port in specs:
        params = {"portNumber": [port], "localPortNumber": [str(listen.port)]}
        document = "AWS-StartPortForwardingSession"
        if host:
            params["host"] = [host]
            document = "AWS-StartPortForwardingSessionToRemoteHost"
        infos.append((listen, host, port, aws.start_session(target, document, params)))

    def ready(where: str) -> Callable[[str], None]:
        return lambda bound: notice(f"forwarding {bound} -> {where} (Ctrl-C to stop)")

    sys.exit(run_forwards(aws, [(info, listen, ready(f"{host or target}:{port}"))
                                for listen, host, port, info in infos],
                          _channel_options(debug)))


@cli.command()
@click.argument("target", shell_complete=complete_instances)
@click.argument("port", default=22, type=int)
@aws_options
@handle_errors
def proxy(target: str, port: int, profile: str | None, region: str | None,
          endpoint_url: str | None, debug: bool) -> None:
    """Bridge stdin/stdout to TARGET:PORT (for ssh's ProxyCommand)."""
    from ssmshell.runner import run_stdio

    target, profile, region = _instance_alias(target, profile, region)
    aws = _aws(profile, region, endpoint_url, debug)
    info = aws.start_session(_instance(aws, target), "AWS-StartSSHSession",
                             {"portNumber": [str(port)]})
    sys.exit(run_stdio(aws, info, _channel_options(debug)))


@cli.command("ssh-config")
@click.option("--profile", metavar="PROFILE", help="Profile to put in the ProxyCommand.",
              shell_complete=complete_profiles)
@click.option("--region", metavar="REGION", help="Region to put in the ProxyCommand.",
              shell_complete=complete_regions)
def ssh_config(profile: str | None, region: str | None) -> None:
    """Print an ~/.ssh/config snippet that reaches i-*/mi-* hosts through ssmshell."""
    extra = "".join(f" --{k} {v}" for k, v in (("profile", profile), ("region", region)) if v)
    click.echo("# ssh to instances by id through Session Manager (added by ssmshell ssh-config)\n"
               "Host i-* mi-*\n"
               f"    ProxyCommand ssmshell proxy{extra} %h %p\n"
               "    StrictHostKeyChecking accept-new")


@cli.command()
@click.option("--no-kms", is_flag=True, help="Do not encrypt the demo session with KMS.")
@handle_errors
def demo(no_kms: bool) -> None:
    """A KMS-encrypted shell on this machine through the embedded local Session Manager."""
    from ssmshell.local.server import LocalSessionManager

    sm = LocalSessionManager()
    if no_kms:
        sm.config.session_kms_key_id = None
    sm.start_in_thread()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_SSM",
                 "AWS_ENDPOINT_URL_KMS"):
        os.environ.pop(name, None)
    os.environ.update(sm.client_env())
    target = next(i.instance_id for i in sm.config.instances if i.ping_status == "Online")
    click.echo(f"ssmshell: demo: local Session Manager at {sm.endpoint_url} "
               f"(no AWS involved), session to {target}", err=True)
    try:
        aws = _aws(None, sm.region, sm.endpoint_url, False)
        info = aws.start_session(target)
        code = _run_shell(aws, info, False)
    finally:
        sm.stop_thread()
    sys.exit(code)


@cli.group()
def local() -> None:
    """The embedded local Session Manager (for trying ssmshell and testing tools)."""


@local.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, type=int, help="AWS endpoint port (default: any free).")
@click.option("--gateway-port", default=0, type=int,
              help="Websocket gateway port (default: any free).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="JSON (or TOML) file describing instances, clusters, keys, preferences.")
@handle_errors
def local_serve(host: str, port: int, gateway_port: int, config_path: str | None) -> None:
    """Run the local Session Manager in the foreground until interrupted."""
    import asyncio
    import gc

    from ssmshell.local.config import load_config
    from ssmshell.local.server import LocalSessionManager

    config = load_config(config_path) if config_path else None
    sm = LocalSessionManager(config)

    async def serve() -> None:
        await sm.start(host, port, gateway_port)
        gc.freeze()  # startup objects live until exit: no collector walks over them
        env = sm.client_env()
        click.echo(f"Local Session Manager listening (Ctrl-C to stop)\n"
                   f"  endpoint:   {sm.endpoint_url}\n"
                   f"  region:     {sm.region}\n"
                   f"  export AWS_ENDPOINT_URL={env['AWS_ENDPOINT_URL']} "
                   f"AWS_REGION={env['AWS_REGION']} "
                   f"AWS_ACCESS_KEY_ID={env['AWS_ACCESS_KEY_ID']} "
                   f"AWS_SECRET_ACCESS_KEY={env['AWS_SECRET_ACCESS_KEY']}\n"
                   f"  instances:  "
                   + ", ".join(i.instance_id for i in sm.config.instances))
        try:
            await asyncio.Event().wait()
        finally:
            await sm.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


def _register_commands() -> None:
    """The commands defined in their own modules (issue 6)."""
    from ssmshell.completion import completion_cmd
    from ssmshell.config import config_cmd
    from ssmshell.doctor import doctor_cmd
    from ssmshell.listing import ls_cmd

    for command in (completion_cmd, config_cmd, doctor_cmd, ls_cmd):
        cli.add_command(command)


_register_commands()


@cli.command("cp")
@click.argument("src")
@click.argument("dest")
@click.option("--parallel", type=click.IntRange(1, 16), metavar="N",
              help="Sessions for one file of 8 MiB or more (default: 4 for downloads, "
                   "1 for uploads).")
@click.option("-r", "--recursive", is_flag=True,
              help="Accepted for habit's sake: directories are always copied whole.")
@aws_options
@handle_errors
def cp(src: str, dest: str, parallel: int | None, recursive: bool, profile: str | None,
       region: str | None, endpoint_url: str | None, debug: bool) -> None:
    """Copy a file or directory to or from an instance or ECS container.

    One of SRC and DEST is TARGET:PATH (TARGET: instance id, Name tag, IP, DNS name)
    or ecs:CLUSTER/TASK[/CONTAINER]:PATH; the other is local. Checked with SHA-256.
    Example: ssmshell cp ./build.tgz web-1:/tmp/
    """
    from ssmshell.copy import copy, parse_spec

    source, target = parse_spec(src), parse_spec(dest)
    aws = _aws(profile, region, endpoint_url, debug)

    def resolve(where: str) -> Any:
        if where.startswith("ecs:"):
            from ssmshell.aws.targets import resolve_ecs

            cluster, task, container = parse_ecs_target(where)
            return resolve_ecs(aws, cluster, task, container,
                               _chooser("ecs:CLUSTER/TASK/CONTAINER"))
        return _instance(aws, where)

    copy(aws, source, target, resolve=resolve, parallel=parallel,
         options=_channel_options(debug))


def main() -> None:
    """Console-script entry point."""
    import gc

    try:
        if os.path.basename(sys.argv[0]) in (PLUGIN_NAME, PLUGIN_NAME + ".exe"):
            from ssmshell import dropin

            sys.exit(dropin.main(sys.argv[1:]))
        cli.main(prog_name="ssmshell")
    except KeyboardInterrupt:
        sys.exit(Exit.INTERRUPTED)
    finally:
        # Nothing needs collecting at exit: skip the collector's walk over botocore's
        # models during interpreter teardown (saves ~60 ms between remote exit and ours).
        gc.freeze()
