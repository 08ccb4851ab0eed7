"""The ``faceauth`` root: commands contributed by each package through entry points."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import typer
import typer.main
from typer.testing import CliRunner

import shared.cli
from shared.cli import plugins
from shared.config import get_settings
from shared.paths import REPO_ROOT

# Every command `faceauth --help` lists, whichever package contributes it.
EVERY_COMMAND = {
    "dev", "demo", "db", "model", "inspect", "enroll", "job", "export", "verify", "identify",
    "calibrate", "backfill", "user", "status", "retention", "quality", "liveness", "train",
    "webhooks", "gateway", "apikey",
}  # fmt: skip
# What each package's entry point contributes.
BY_PACKAGE = {
    "shared": {
        "db", "model", "inspect", "enroll", "job", "export", "verify", "identify", "backfill",
        "user", "status", "retention", "webhooks",
    },
    "workers": {"calibrate", "quality", "liveness", "model"},  # model: adds ``model info``
    "deploy": {"dev", "demo"},
    "training": {"train"},
    "gateway": {"gateway", "apikey"},
}  # fmt: skip
HEAVY = (
    "onnxruntime", "insightface", "torch", "cv2", "timm", "mediapipe", "deploy.devstack",
    "fastapi", "uvicorn",
)  # fmt: skip
MAIN = "import shared.cli; shared.cli.main()"
WIDE = {"COLUMNS": "200"}  # rich wraps help to the terminal width


def _names(app: typer.Typer) -> set[str]:
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    return set(command.commands)


def _register_hello(app: typer.Typer) -> None:
    """A package outside the project contributing one command."""

    @app.command("hello")
    def hello() -> None:
        """Say hello."""
        typer.echo("hello from a plugin")


# --- discovery ---------------------------------------------------------------------------------


def test_each_package_registers_in_the_entry_point_group() -> None:
    eps = {ep.name: ep for ep in plugins.contributions()}
    assert set(BY_PACKAGE) <= set(eps)
    assert plugins.contributions()[0].name == "shared"  # the others add to its groups
    assert eps["shared"].value == "shared.cli.commands:register"
    assert eps["workers"].value == "workers.cli:register"
    assert eps["deploy"].value == "deploy.cli:register"
    assert eps["training"].value == "training.cli:register"
    assert eps["gateway"].value == "gateway.cli:register"
    for name, expected in BY_PACKAGE.items():
        app = typer.Typer()
        eps[name].load()(app)
        assert _names(app) == expected, name


def test_root_is_the_union_of_the_contributions() -> None:
    assert _names(shared.cli.build_app()) == EVERY_COMMAND


def test_root_mounts_a_foreign_package_and_skips_one_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = plugins.contributions
    extra = [
        EntryPoint("zz-plugin", f"{__name__}:_register_hello", plugins.COMMANDS_GROUP),
        EntryPoint("ghost", "ghost_package_not_installed.cli:register", plugins.COMMANDS_GROUP),
    ]
    monkeypatch.setattr(plugins, "contributions", lambda group=plugins.COMMANDS_GROUP: [
        *real(group), *extra
    ])  # fmt: skip
    app = shared.cli.build_app()
    assert _names(app) == EVERY_COMMAND | {"hello"}
    result = CliRunner().invoke(app, ["hello"])
    assert result.exit_code == 0 and "hello from a plugin" in result.stdout


def test_workers_add_info_to_the_model_group_of_shared() -> None:
    result = CliRunner().invoke(shared.cli.build_app(), ["model", "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    listed = re.findall(r"^│ (\w+) ", result.stdout, flags=re.MULTILINE)
    assert listed == ["info", "status", "activate", "reembed"]


def test_shared_asks_the_workers_for_the_model_version() -> None:
    from workers.cli.model import configured_model_version

    assert plugins.model_version_hook() is configured_model_version


def test_reembed_without_the_workers_asks_for_a_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.cli.model

    monkeypatch.setattr(shared.cli.model, "model_version_hook", lambda: None)
    with pytest.raises(typer.BadParameter, match="name the target version"):
        shared.cli.model.current_model_version()


# --- unavailable commands ----------------------------------------------------------------------


def test_a_command_whose_dependency_is_missing_stays_listed_as_unavailable() -> None:
    app = typer.Typer(no_args_is_help=True)
    sub = typer.Typer()
    sub.command("run")(lambda: None)
    plugins.mount_group(app, "gpu", "Needs a GPU library.", lambda: sub, requires=("no_such_lib",))

    def broken() -> typer.Typer:
        raise ModuleNotFoundError("No module named 'other_missing'", name="other_missing")

    plugins.mount_group(app, "broken", "Imports something missing.", broken)
    plugins.mount_command(
        app, "one", "A single command.", lambda: lambda: None, requires=("zz_no",)
    )
    plugins.mount_group(app, "fine", "Available.", lambda: sub, requires=("json",))

    runner = CliRunner()
    helped = runner.invoke(app, ["--help"], env=WIDE)
    assert "Needs a GPU library. (unavailable: no_such_lib is not installed)" in helped.stdout
    assert "Imports something missing. (unavailable: other_missing is not installed)" in (
        helped.stdout
    )
    assert "A single command. (unavailable: zz_no is not installed)" in helped.stdout
    assert "Available." in helped.stdout and "Available. (unavailable" not in helped.stdout
    ran = runner.invoke(app, ["gpu", "run", "--flag", "x"])
    assert ran.exit_code == plugins.EXIT_UNAVAILABLE
    assert "no_such_lib is not installed" in ran.stderr
    assert runner.invoke(app, ["fine", "run"]).exit_code == 0


# --- --help stays light ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["quality", "--help"],
        ["liveness", "score", "--help"],
        ["calibrate", "--help"],
        ["model", "--help"],
        ["dev", "--help"],
        ["train", "liveness", "--help"],
        ["gateway", "--help"],
        ["apikey", "create", "--help"],
    ],
    ids=" ".join,
)
def test_help_imports_no_model_runtime(argv: list[str]) -> None:
    script = (
        "import json, sys\n"
        "import shared.cli\n"
        f"sys.argv = ['faceauth', *{argv!r}]\n"
        "try:\n"
        "    shared.cli.main()\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        f"heavy = [m for m in sys.modules if m.startswith({HEAVY!r})]\n"
        "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **WIDE},
    )
    report = json.loads(out.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, out.stderr


def test_faceauth_help_lists_every_command() -> None:
    script = Path(sys.executable).with_name("faceauth")  # the installed console script
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", MAIN]
    out = subprocess.run(
        [*cmd, "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **WIDE},
    )
    listed = set(re.findall(r"^│ (\w+) ", out.stdout, flags=re.MULTILINE))
    assert listed == EVERY_COMMAND, out.stdout
    assert "unavailable" not in out.stdout  # every extra is installed in the test environment


# --- logging -----------------------------------------------------------------------------------


@pytest.fixture
def _restore_loggers() -> Iterator[None]:
    names = ["shared", "workers", "deploy", "training"]
    levels = {n: logging.getLogger(n).level for n in names}
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("_restore_loggers")
def test_the_root_applies_faceauth_log_level() -> None:
    app = shared.cli.build_app()
    result = CliRunner().invoke(app, ["model", "--help"], env={"FACEAUTH_LOG_LEVEL": "debug"})
    assert result.exit_code == 0, result.output
    for name in ("shared", "workers", "deploy", "training"):
        assert logging.getLogger(name).level == logging.DEBUG, name
    get_settings.cache_clear()
    bad = CliRunner().invoke(app, ["model", "--help"], env={"FACEAUTH_LOG_LEVEL": "loud"})
    assert bad.exit_code == 2
    assert "unknown log level 'LOUD'" in bad.stderr
