"""Options and error handling shared by the commands defined outside :mod:`ssmshell.cli`
(``ls``, ``doctor``, ``config``), which cannot import it (``cli`` imports them).

The options mirror ``cli.aws_options`` and complete live values in the shell.
"""

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
    func = click.option("--profile", metavar="PROFILE", help="AWS profile.",
                        shell_complete=complete_profiles)(func)
    return func


def handle_errors(func: F) -> F:
    """Turn :class:`UserError` into one line on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            click.echo(f"ssmshell: {exc.message}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(Exit.INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def make_aws(profile: str | None, region: str | None, endpoint_url: str | None) -> Any:
    """An :class:`~ssmshell.aws.api.Aws` with the config file's default profile/region
    applied where neither the option nor the environment gives one."""
    from ssmshell.aws.api import Aws
    from ssmshell.config import load_config

    config = load_config()
    return Aws(profile=config.profile(profile), region=config.region(region),
               endpoint_url=endpoint_url)
