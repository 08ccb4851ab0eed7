"""Regenerate the README's tables: configuration (``Settings``) and job kinds (``JOBS``).

python -m deploy.config_docs        # rewrites the blocks between the markers
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from shared.celery_config import queue_for
from shared.config import Settings
from shared.paths import REPO_ROOT
from shared.schemas import JOBS

START, END = "<!-- config:start -->", "<!-- config:end -->"
TASKS_START, TASKS_END = "<!-- tasks:start -->", "<!-- tasks:end -->"
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


def task_table() -> str:
    settings = Settings()
    lines = ["| task name | queue | request model | what it does |", "|---|---|---|---|"]
    for spec in JOBS.values():
        lines.append(
            f"| `{spec.task_name}` | `{queue_for(spec, settings)}` |"
            f" `{spec.request.__name__}` | {spec.summary} |"
        )
    return "\n".join(lines)


def _replace_block(text: str, start: str, end: str, body: str) -> str:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def rewrite(readme: Path) -> None:
    text = _replace_block(readme.read_text(), START, END, config_table())
    readme.write_text(_replace_block(text, TASKS_START, TASKS_END, task_table()))


if __name__ == "__main__":
    rewrite(REPO_ROOT / "README.md")
