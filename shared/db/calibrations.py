"""Saved calibrations: the decision thresholds verification uses per model version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class ActiveThresholds:
    t_low: float
    t_high: float
    calibration_id: UUID | None  # None: the configured defaults, no calibration saved

    def as_dict(self) -> dict[str, Any]:
        return {
            "t_low": self.t_low,
            "t_high": self.t_high,
            "calibration_id": str(self.calibration_id) if self.calibration_id else None,
            "source": "calibration" if self.calibration_id else "settings",
        }


def save_calibration(
    conn: psycopg.Connection,
    *,
    model_version: str,
    t_low: float,
    t_high: float,
    report: dict[str, Any],
    activate: bool,
) -> UUID:
    calibration_id = uuid4()
    with conn.transaction():
        if activate:
            conn.execute(
                "UPDATE calibrations SET is_active = false WHERE model_version = %s AND is_active",
                (model_version,),
            )
        conn.execute(
            "INSERT INTO calibrations (calibration_id, model_version, t_low, t_high, report,"
            " is_active) VALUES (%s, %s, %s, %s, %s, %s)",
            (calibration_id, model_version, t_low, t_high, Jsonb(report), activate),
        )
    return calibration_id


def active_thresholds(
    conn: psycopg.Connection, model_version: str, *, default_low: float, default_high: float
) -> ActiveThresholds:
    row = conn.execute(
        "SELECT calibration_id, t_low, t_high FROM calibrations"
        " WHERE model_version = %s AND is_active",
        (model_version,),
    ).fetchone()
    if row is None:
        return ActiveThresholds(default_low, default_high, None)
    return ActiveThresholds(float(row[1]), float(row[2]), row[0])
