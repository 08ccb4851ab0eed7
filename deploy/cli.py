"""``faceauth dev up|down`` and ``faceauth demo``: the embedded stack for people.

Contributed to ``faceauth`` through the ``faceauth.commands`` entry-point group
(``register``). The dev stack and the demo are imported when a command runs.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from pathlib import Path

import typer

from shared.cli.output import console

app = typer.Typer(no_args_is_help=True)

DEFAULT_DIR = Path(".faceauth/dev")


@app.command("up")
def up(
    data_dir: Path = typer.Option(DEFAULT_DIR, help="where server data and logs live"),
    detach: bool = typer.Option(False, help="leave the stack running; stop it with 'dev down'"),
    keep_data: bool = typer.Option(
        False, help="keep the data dir when the stack stops (also for 'dev down' after --detach)"
    ),
    worker: bool = typer.Option(True, help="also start a Celery worker on both queues"),
    flower: bool = typer.Option(True, help="also start Flower (basic auth)"),
    gateway: bool = typer.Option(True, help="also start the HTTP gateway (and an admin key)"),
) -> None:
    """Start Redis, Postgres+pgvector, an S3 server, a worker, Flower and the HTTP gateway
    on loopback."""
    from deploy.demo import create_dev_api_key, settings_for, worker_env
    from deploy.devstack import DevStack

    started = time.perf_counter()
    # A detached stack records keep_data in its state file: `dev down` removes the data
    # dir (and the PostgreSQL home outside it) unless --keep-data was asked for here.
    stack = DevStack(data_dir.resolve(), keep_data=keep_data)
    handed_over = False
    try:
        endpoints = stack.start_services()
        settings = settings_for(endpoints)
        if worker:
            stack.start_worker(
                queues=[settings.queue_inference, settings.queue_io], extra_env=worker_env()
            )
        flower_url = None
        env = {**endpoints.env(), **worker_env()}
        if flower:
            password = secrets.token_urlsafe(12)
            flower_url = stack.start_flower(user="admin", password=password)
            env.update({"FACEAUTH_FLOWER_USER": "admin", "FACEAUTH_FLOWER_PASSWORD": password})
        gateway_url = None
        if gateway:
            gateway_url = stack.start_gateway()
            # Not settings: what the README's curl examples read ($FACEAUTH_GATEWAY_URL,
            # $FACEAUTH_API_KEY, an admin key of this dev stack only).
            env["FACEAUTH_GATEWAY_URL"] = gateway_url
            env["FACEAUTH_API_KEY"] = create_dev_api_key(settings, "dev up")
        env_file = data_dir / "env"
        # Created 0600 (it holds the Redis, S3 and Flower credentials), never wider.
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write("".join(f"export {k}='{v}'\n" for k, v in env.items()))
        console.print(f"ready in {time.perf_counter() - started:.1f}s")
        console.print(json.dumps(stack.versions(), indent=2))
        if flower_url:
            console.print(f"Flower: {flower_url} (credentials in {env_file})")
        if gateway_url:
            console.print(
                f"HTTP gateway: {gateway_url} (docs at /docs; admin API key in {env_file})"
            )
        console.print(f"environment for other shells: source {env_file}")
        if detach:
            stack.write_state(data_dir / "state.json")
            handed_over = True
            return
        console.print("Ctrl-C stops the stack")
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        if not handed_over:
            stack.stop()


@app.command("down")
def down(data_dir: Path = typer.Option(DEFAULT_DIR, help="the data dir given to 'dev up'")) -> None:
    """Stop a stack started with 'dev up --detach'; remove its data unless it was --keep-data."""
    from deploy.devstack import DevStack

    state = data_dir / "state.json"
    if not state.exists():
        console.print(f"no running stack recorded in {state}")
        raise typer.Exit(code=1)
    DevStack.stop_from_state(state)
    console.print("stopped")


def demo(
    keep_data: bool = typer.Option(False, help="keep server data after the demo"),
) -> None:
    """Start the embedded stack, enroll and verify the sample photos through the queue, stop."""
    from deploy.demo import run_demo

    report = run_demo(keep_data=keep_data)
    failed = [name for name, status in report.enrolled.items() if status != "succeeded"]
    raise typer.Exit(code=1 if failed else 0)


def register(root: typer.Typer) -> None:
    """Contribute ``demo`` and ``dev`` to the ``faceauth`` root."""
    root.command("demo")(demo)
    root.add_typer(
        app,
        name="dev",
        help="Embedded dev stack (Redis, Postgres, S3, worker, Flower, gateway).",
    )
