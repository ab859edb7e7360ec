"""The vmdev-cdi plugin: ``vmdev cdi`` commands (the planner integration follows)."""

from __future__ import annotations

import click

from vmdev import hookimpl


@hookimpl
def register_commands(cli: click.Group) -> None:
    from vmdev_cdi.cli import cdi_group

    cli.add_command(cdi_group)
