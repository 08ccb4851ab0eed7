"""``python -m gateway [--host H] [--port P] [--workers N]``: the same as ``faceauth gateway``."""

from __future__ import annotations

import typer

from gateway.cli import serve
from shared.cli import configure_logging


def main() -> None:
    configure_logging()
    typer.run(serve)


if __name__ == "__main__":
    main()
