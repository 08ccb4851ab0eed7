"""Saved liveness thresholds per capture channel and liveness model version.

A channel (``mobile``, ``web``, ``kiosk``, ...) names where a probe was captured; its
cameras, screens and attacks differ, so each may carry its own spoof-score threshold,
measured with ``faceauth liveness evaluate`` and stored here, versioned like the face
calibrations (shared/db/calibrations.py): each save is a new row and at most one is
active per (channel, model version). A job without a channel, or a channel without an
active calibration for the deployed model, uses the configured default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID, uuid4

import psycopg
from psycopg.types.json import Jsonb

from shared.schemas import CHANNEL_PATTERN

_CHANNEL_RE = re.compile(CHANNEL_PATTERN)

ThresholdSource = Literal["calibration", "settings"]


def valid_channel(channel: str) -> bool:
    return bool(_CHANNEL_RE.fullmatch(channel))


@dataclass(frozen=True)
class LivenessThreshold:
    threshold: float
    calibration_id: UUID | None  # None: the configured default decided
    channel: str | None
    source: ThresholdSource

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "calibration_id": str(self.calibration_id) if self.calibration_id else None,
            "channel": self.channel,
            "threshold_source": self.source,
        }


@dataclass(frozen=True)
class LivenessCalibration:
    calibration_id: UUID
    channel: str
    model_name: str
    model_version: str
    threshold: float
    is_active: bool
    created_at: datetime
    report: dict[str, Any]


def save_liveness_calibration(
    conn: psycopg.Connection,
    *,
    channel: str,
    model_name: str,
    model_version: str,
    threshold: float,
    report: dict[str, Any],
    activate: bool,
) -> UUID:
    """Store a threshold for ``channel``; with ``activate`` it replaces the active one."""
    if not valid_channel(channel):
        raise ValueError(f"channel {channel!r} does not match {CHANNEL_PATTERN}")
    calibration_id = uuid4()
    with conn.transaction():
        if activate:
            conn.execute(
                "UPDATE liveness_calibrations SET is_active = false"
                " WHERE channel = %s AND model_version = %s AND is_active",
                (channel, model_version),
            )
        conn.execute(
            "INSERT INTO liveness_calibrations (calibration_id, channel, model_name,"
            " model_version, threshold, report, is_active) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                calibration_id,
                channel,
                model_name,
                model_version,
                threshold,
                Jsonb(report),
                activate,
            ),
        )
    return calibration_id


def activate_liveness_calibration(conn: psycopg.Connection, calibration_id: UUID) -> bool:
    """Make a saved calibration the active one of its channel and model; False if unknown."""
    with conn.transaction():
        row = conn.execute(
            "SELECT channel, model_version FROM liveness_calibrations"
            " WHERE calibration_id = %s FOR UPDATE",
            (calibration_id,),
        ).fetchone()
        if row is None:
            return False
        conn.execute(
            "UPDATE liveness_calibrations SET is_active = false"
            " WHERE channel = %s AND model_version = %s AND is_active",
            (row[0], row[1]),
        )
        conn.execute(
            "UPDATE liveness_calibrations SET is_active = true WHERE calibration_id = %s",
            (calibration_id,),
        )
    return True


def active_liveness_threshold(
    conn: psycopg.Connection, *, channel: str | None, model_version: str, default: float
) -> LivenessThreshold:
    """The threshold that decides a probe of ``channel`` scored by ``model_version``."""
    if channel is None:
        return LivenessThreshold(default, None, None, "settings")
    row = conn.execute(
        "SELECT calibration_id, threshold FROM liveness_calibrations"
        " WHERE channel = %s AND model_version = %s AND is_active",
        (channel, model_version),
    ).fetchone()
    if row is None:
        return LivenessThreshold(default, None, channel, "settings")
    return LivenessThreshold(float(row[1]), row[0], channel, "calibration")


def list_liveness_calibrations(
    conn: psycopg.Connection, *, channel: str | None = None, limit: int = 50
) -> list[LivenessCalibration]:
    """Newest first; optionally one channel's."""
    rows = conn.execute(
        "SELECT calibration_id, channel, model_name, model_version, threshold, is_active,"
        " created_at, report FROM liveness_calibrations"
        " WHERE %(channel)s::text IS NULL OR channel = %(channel)s"
        " ORDER BY created_at DESC LIMIT %(limit)s",
        {"channel": channel, "limit": limit},
    ).fetchall()
    return [
        LivenessCalibration(
            calibration_id=r[0],
            channel=str(r[1]),
            model_name=str(r[2]),
            model_version=str(r[3]),
            threshold=float(r[4]),
            is_active=bool(r[5]),
            created_at=r[6],
            report=dict(r[7]),
        )
        for r in rows
    ]
