"""The default demo: enroll and verify the sample photos through the real queue.

Starts the embedded stack (Redis, Postgres+pgvector, S3, a Celery worker with
the test face pack and the MiniFASNet liveness model, Flower with basic auth, the HTTP
gateway), enrolls every person in ``faces/identities`` with all but their last photo,
then verifies each held-out photo against every enrolled user, verifies one more over
HTTP (as another service would), and stops everything again.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from deploy.devstack import DevStack, StackEndpoints
from shared.config import Settings
from shared.paths import faces_dir, minifasnet_dir, sample_face_pack_dir

console = Console(width=110)  # the table is wider than 80 columns


def worker_env() -> dict[str, str]:
    """Settings for a dev worker: the test pack, the pretrained liveness model, local receivers."""
    return {
        "FACEAUTH_FACE_PACK_DIR": str(sample_face_pack_dir()),
        "FACEAUTH_LIVENESS_MODEL_DIR": str(minifasnet_dir()),
        # Dev receivers run on this machine (loopback): never set this in production (SSRF).
        "FACEAUTH_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
    }


def create_dev_api_key(settings: Settings, name: str) -> str:
    """A new admin API key of a dev stack (its token; the stack's data dir holds it)."""
    from shared.db import api_keys
    from shared.db.pool import get_pool

    with get_pool(settings).connection() as conn:
        return api_keys.create_key(conn, name=name, scopes={api_keys.Scope.ADMIN}).token


def verify_over_http(gateway_url: str, token: str, user_id: str, photo: Path) -> dict[str, Any]:
    """One verification through the gateway, as a service without Python would send it."""
    import httpx

    response = httpx.post(
        f"{gateway_url}/v1/verifications",
        params={"wait": 30},
        headers={"Authorization": f"Bearer {token}"},
        data={"user_id": user_id},
        files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
        timeout=60,
    )
    body: dict[str, Any] = response.json()
    body["http_status"] = response.status_code
    return body


def settings_for(endpoints: StackEndpoints, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        k.removeprefix("FACEAUTH_").lower(): v
        for k, v in {**endpoints.env(), **worker_env()}.items()
    }
    values.update(overrides)
    return Settings.model_validate(values)


@dataclass
class DemoReport:
    enrolled: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def people(root: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = sorted(
            p for p in person.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
        )
        if photos:
            out[person.name] = photos
    return out


def run_demo_jobs(settings: Settings, *, timeout: float = 120.0) -> DemoReport:
    from shared.producer import FaceauthClient

    client = FaceauthClient(settings)
    report = DemoReport()
    started = time.perf_counter()
    gallery = people(faces_dir() / "identities")
    enroll_jobs = {
        name: client.submit_enrollment(name, [p.read_bytes() for p in photos[:-1] or photos])
        for name, photos in gallery.items()
    }
    for name, job_id in enroll_jobs.items():
        job = client.wait(job_id, timeout=timeout)
        report.enrolled[name] = str(job.status)
        err = job.error["code"] if job.error else ""
        console.print(f"enroll {name:<16} {job.status:<10} {err}")
    for name, photos in gallery.items():
        probe = photos[-1]
        for claimed in gallery:
            job_id = client.submit_verification(claimed, probe.read_bytes())
            job = client.wait(job_id, timeout=timeout)
            result = job.result or {}
            report.rows.append(
                {
                    "probe": f"{name}/{probe.name}",
                    "claimed": claimed,
                    "decision": result.get("decision", job.error["code"] if job.error else "?"),
                    "score": result.get("score"),
                    "spoof_score": (result.get("probe", {}).get("liveness") or {}).get(
                        "spoof_score"
                    ),
                }
            )
    # Presentation attacks: a replay and a print of a face shown to the camera.
    pad = faces_dir() / "pad"
    live_photo = pad / "live" / "image_T1.jpg"
    enrolled = client.wait(client.submit_enrollment("pad-demo", [live_photo.read_bytes()]), timeout)
    report.enrolled["pad-demo"] = str(enrolled.status)
    for attack in sorted([*pad.glob("print/*.jpg"), *pad.glob("replay/*.jpg")]):
        job = client.wait(client.submit_verification("pad-demo", attack.read_bytes()), timeout)
        result = job.result or {}
        spoof = (result.get("probe", {}).get("liveness") or {}).get("spoof_score")
        report.rows.append(
            {
                "probe": f"pad/{attack.parent.name}/{attack.name}",
                "claimed": "pad-demo",
                "decision": result.get("decision", job.error["code"] if job.error else "?"),
                "score": result.get("score"),
                "spoof_score": spoof,
            }
        )
    report.seconds = time.perf_counter() - started
    return report


def print_report(report: DemoReport) -> None:
    table = Table("probe", "claimed user", "decision", "similarity", "spoof score")
    for row in report.rows:
        genuine = row["probe"].split("/")[0] == row["claimed"]
        style = "bold" if genuine else ""
        score = f"{row['score']:.3f}" if isinstance(row["score"], float) else "-"
        spoof = row.get("spoof_score")
        spoof_text = f"{spoof:.3f}" if isinstance(spoof, float) else "-"
        table.add_row(row["probe"], row["claimed"], row["decision"], score, spoof_text, style=style)
    console.print(table)
    console.print(f"done in {report.seconds:.1f}s")


def run_demo(*, data_dir: Path | None = None, keep_data: bool = False) -> DemoReport:
    root = data_dir or Path(tempfile.mkdtemp(prefix="faceauth-demo-"))
    password = secrets.token_urlsafe(12)
    with DevStack(root, keep_data=keep_data) as stack:
        t0 = time.perf_counter()
        endpoints = stack.start_services()
        settings = settings_for(endpoints)
        stack.start_worker(
            queues=[settings.queue_inference, settings.queue_io], extra_env=worker_env()
        )
        flower = stack.start_flower(user="admin", password=password)
        gateway = stack.start_gateway()
        console.print(
            f"stack ready in {time.perf_counter() - t0:.1f}s; Flower at {flower} (user admin);"
            f" HTTP gateway at {gateway}"
        )
        report = run_demo_jobs(settings)
        print_report(report)
        name, photos = next(iter(people(faces_dir() / "identities").items()))
        answer = verify_over_http(gateway, create_dev_api_key(settings, "demo"), name, photos[-1])
        decision = (answer.get("result") or {}).get("decision", answer.get("code"))
        console.print(
            f"over HTTP: POST {gateway}/v1/verifications?wait=30 ({name}, {photos[-1].name})"
            f" -> {answer['http_status']} {decision}"
        )
        return report
