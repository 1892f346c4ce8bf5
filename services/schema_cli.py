"""``tandem schema``: write the subject catalogue (AsyncAPI 3.0 or JSON Schema) generated from the messages.

Kept cheap to import (the CLI imports it at start-up): the generator is imported inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["schema_command"]


def schema_command(
    fmt: Annotated[str, typer.Option("--format", "-f", help="asyncapi (YAML, AsyncAPI 3.0) or jsonschema.")] = "asyncapi",
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Directory to write into (default: stdout).")] = None,
) -> None:
    """Print (or write into -o DIR) the catalogue of Tandem's NATS subjects and message schemas.

    ``tandem schema -o docs/`` regenerates the checked-in ``docs/asyncapi.yaml``.
    """
    from .schema import render

    if fmt not in ("asyncapi", "jsonschema"):
        raise typer.BadParameter("--format is asyncapi or jsonschema")
    name, text = render(fmt)  # type: ignore[arg-type]
    if out is None:
        sys.stdout.write(text)
        return
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {path}", err=True)
