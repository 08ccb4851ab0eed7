"""Regenerate the README's configuration table from ``shared.config.Settings``.

python -m deploy.config_docs        # rewrites the block between the markers
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from shared.config import Settings
from shared.paths import REPO_ROOT

START, END = "<!-- config:start -->", "<!-- config:end -->"
_DISPLAY_DEFAULTS = {
    "face_pack_dir": "~/.insightface/models/buffalo_l",
    "database_url": "postgresql://faceauth_app@localhost:5432/faceauth",
}


def config_table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if name in _DISPLAY_DEFAULTS:
            shown = _DISPLAY_DEFAULTS[name]
        elif isinstance(default, SecretStr):
            shown = "(secret, empty)"
        else:
            shown = str(default)
        lines.append(f"| `FACEAUTH_{name.upper()}` | `{shown}` | {field.description} |")
    return "\n".join(lines)


def rewrite(readme: Path) -> None:
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{config_table()}\n{END}{tail}")


if __name__ == "__main__":
    rewrite(REPO_ROOT / "README.md")
