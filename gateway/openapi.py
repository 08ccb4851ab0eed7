"""The gateway's OpenAPI document, committed as ``gateway/openapi.json`` (a test keeps it
in step with the code; ``/openapi.json`` and ``/docs`` serve the live one).

    python -m gateway.openapi            # rewrite gateway/openapi.json
    python -m gateway.openapi --check    # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OPENAPI_FILE = Path(__file__).with_name("openapi.json")


def render() -> str:
    from gateway.app import create_app
    from shared.config import Settings

    return json.dumps(create_app(Settings()).openapi(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.openapi", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OPENAPI_FILE.read_text() if OPENAPI_FILE.exists() else ""
        if current != text:
            print(f"{OPENAPI_FILE} is stale: run python -m gateway.openapi", file=sys.stderr)
            return 1
        return 0
    OPENAPI_FILE.write_text(text)
    print(f"wrote {OPENAPI_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
