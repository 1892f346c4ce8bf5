"""``tandem up`` and ``tandem status``: the multi-process topology on this machine (issue 15).

Kept cheap to import (the CLI imports it at start-up): the supervisor is imported inside the commands.
"""

from __future__ import annotations

import typer

__all__ = ["status_command", "up_command"]


def up_command() -> None:
    """Start nats-server and every actor as its own process (work in progress)."""
    raise typer.Exit(2)


def status_command() -> None:
    """Show the actors serving on the bus (work in progress)."""
    raise typer.Exit(2)
