"""``faceauth apikey create | list | revoke``: the gateway's credentials.

The token (and the webhook signing secret when a callback URL is given) is printed once,
at creation, and stored only as a hash (the secret) or for signing (the webhook secret).
A callback URL is checked against SSRF (``shared.net_guard``): private, loopback,
link-local and cloud-metadata destinations are refused unless
``FACEAUTH_WEBHOOK_ALLOW_PRIVATE_NETWORKS``.
"""

from __future__ import annotations

import json

import typer
from rich.table import Table

from shared.cli.output import console, typer_echo
from shared.config import get_settings

app = typer.Typer(no_args_is_help=True)


@app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="who or what the key is for"),
    scope: list[str] = typer.Option(
        ..., "--scope", help="enroll, verify, identify or admin (repeat for several)"
    ),
    callback_url: str | None = typer.Option(
        None, "--callback-url", help="where job outcomes are POSTed (Standard Webhooks)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Create an API key; its token is shown now and never again."""
    from shared.db import api_keys
    from shared.db.pool import get_pool
    from shared.net_guard import check_callback_url

    settings = get_settings()
    try:
        scopes = {api_keys.Scope(s.strip().lower()) for s in scope}
    except ValueError:
        known = ", ".join(s.value for s in api_keys.Scope)
        raise typer.BadParameter(f"scopes are {known}", param_hint="--scope") from None
    if callback_url is not None:
        try:
            check_callback_url(callback_url, allow_private=settings.webhook_allow_private_networks)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--callback-url") from None
    with get_pool(settings).connection() as conn:
        new = api_keys.create_key(conn, name=name, scopes=scopes, callback_url=callback_url)
    if as_json:
        typer_echo(
            json.dumps(
                {
                    "key_id": new.key.key_id,
                    "name": new.key.name,
                    "scopes": sorted(str(s) for s in new.key.scopes),
                    "callback_url": new.key.callback_url,
                    "token": new.token,
                    "webhook_secret": new.webhook_secret,
                },
                indent=2,
            )
        )
        return
    console.print(f"key [bold]{new.key.key_id}[/] ({', '.join(sorted(new.key.scopes))})")
    console.print("token (shown once; send it as 'Authorization: Bearer <token>'):")
    typer_echo(new.token)
    if new.webhook_secret is not None:
        console.print("webhook signing secret (shown once; verify 'webhook-signature' with it):")
        typer_echo(new.webhook_secret)


@app.command("list")
def list_keys(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Every key: id, name, scopes, callback, created / last used / revoked (no secrets)."""
    from shared.db import api_keys
    from shared.db.pool import get_pool

    with get_pool(get_settings()).connection() as conn:
        keys = api_keys.list_keys(conn)
    if as_json:
        rows = [
            {
                "key_id": k.key_id,
                "name": k.name,
                "scopes": sorted(str(s) for s in k.scopes),
                "callback_url": k.callback_url,
                "created_at": k.created_at.isoformat(),
                "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
                "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
            }
            for k in keys
        ]
        typer_echo(json.dumps(rows, indent=2))
        return
    table = Table("key id", "name", "scopes", "callback", "created", "last used", "revoked")
    for k in keys:
        table.add_row(
            k.key_id,
            k.name,
            ",".join(sorted(str(s) for s in k.scopes)),
            k.callback_url or "-",
            f"{k.created_at:%Y-%m-%d %H:%M:%S}",
            f"{k.last_used_at:%Y-%m-%d %H:%M:%S}" if k.last_used_at else "-",
            f"{k.revoked_at:%Y-%m-%d %H:%M:%S}" if k.revoked_at else "-",
            style="dim" if k.revoked_at else "",
        )
    console.print(table)


@app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="the key id (fa_<key id>_...)")) -> None:
    """Revoke a key: its next request is refused (401)."""
    from shared.db import api_keys
    from shared.db.pool import get_pool

    with get_pool(get_settings()).connection() as conn:
        revoked = api_keys.revoke_key(conn, key_id)
    if not revoked:
        console.print(f"[red]no live key {key_id!r}[/]")
        raise typer.Exit(code=1)
    console.print(f"key {key_id} revoked")
