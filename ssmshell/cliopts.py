"""Options and error handling shared by every command: those of :mod:`ssmshell.cli`
and those defined in their own modules (``ls``, ``doctor``, ``config``), which cannot
import ``cli`` (it imports them)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ssmshell.completion import complete_profiles, complete_regions
from ssmshell.errors import Exit, UserError

F = TypeVar("F", bound=Callable[..., Any])


def aws_options(func: F) -> F:
    """``--profile``, ``--region``, ``--endpoint-url``, as the AWS CLI has them."""
    func = click.option("--endpoint-url", metavar="URL",
                        help="Use this endpoint for every AWS service "
                             "(AWS_ENDPOINT_URL* are honoured too).")(func)
    func = click.option("--region", metavar="REGION", help="AWS region.",
                        shell_complete=complete_regions)(func)
    func = click.option("--profile", metavar="PROFILE",
                        help="AWS profile (SSO and assume-role profiles work).",
                        shell_complete=complete_profiles)(func)
    return func


def parse_ecs_target(target: str) -> tuple[str, str, str | None]:
    """``ecs:CLUSTER/TASK[/CONTAINER]`` → (cluster, task, container)."""
    parts = target[len("ecs:"):].split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UserError(f"bad ECS target {target!r}: use ecs:CLUSTER/TASK[/CONTAINER]",
                        Exit.USAGE)
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def handle_errors(func: F) -> F:
    """Turn :class:`UserError` into one line on stderr and its exit code; a target
    that is not connected or has ECS Exec off gets the doctor command that checks it."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            message = exc.message
            if exc.exit_code in (Exit.TARGET_NOT_CONNECTED, Exit.EXEC_NOT_ENABLED):
                message += f" (check it with: {_doctor_hint(kwargs)})"
            click.echo(f"ssmshell: {message}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(Exit.INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def _doctor_hint(params: dict[str, Any]) -> str:
    from ssmshell.doctor import doctor_hint

    target, cluster, task, container = (params.get("target"), params.get("cluster"),
                                        params.get("task"), params.get("container"))
    if isinstance(target, str) and target.startswith("ecs:"):
        cluster, task, container = parse_ecs_target(target)
        target = None
    return doctor_hint(cluster, task, container, target, profile=params.get("profile"),
                       region=params.get("region"))


def make_aws(profile: str | None, region: str | None, endpoint_url: str | None) -> Any:
    """An :class:`~ssmshell.aws.api.Aws` with the config file's default profile/region
    applied where neither the option nor the environment gives one."""
    from ssmshell.aws.api import Aws
    from ssmshell.config import load_config

    config = load_config()
    return Aws(profile=config.profile(profile), region=config.region(region),
               endpoint_url=endpoint_url)
