"""What a key without the admin scope may see of a job: decisions and reason codes, no
raw liveness score.

A spoof score tells an attacker how close a presentation attack came to passing, so it
is stripped, wherever it sits, from results sent to non-admin keys: every ``spoof_score``
(a probe's ``liveness``, its ``quality`` metrics, an enrollment's images, the details of
a failed job), any per-member ``scores`` of a ``liveness`` block, and the measured
``value`` and the message (which quotes the score) of a ``spoof_suspected`` reason. The
reason code itself stays: the caller must know why a face was refused.
"""

from __future__ import annotations

from typing import Any

from shared.quality_codes import QualityReasonCode

# Keys that hold a raw liveness score wherever they appear.
SCORE_KEYS = frozenset({"spoof_score", "spoof_scores", "live_score", "liveness_score"})
# Keys that hold raw scores inside a ``liveness`` block only (elsewhere they mean other things).
LIVENESS_SCORE_KEYS = frozenset({"scores", "score", "member_scores"})
SPOOF_REASON = str(QualityReasonCode.SPOOF_SUSPECTED)
SPOOF_MESSAGE = "possible presentation attack"


def strip_spoof_scores(value: Any) -> Any:
    """A copy of ``value`` (JSON-like) without any raw liveness score; input untouched."""
    return _strip(value, in_liveness=False)


def _strip(value: Any, *, in_liveness: bool) -> Any:
    if isinstance(value, list):
        return [_strip(item, in_liveness=in_liveness) for item in value]
    if not isinstance(value, dict):
        return value
    spoof_reason = value.get("code") == SPOOF_REASON
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in SCORE_KEYS or (in_liveness and key in LIVENESS_SCORE_KEYS):
            continue
        if spoof_reason and key == "value":
            continue
        if spoof_reason and key == "message":
            out[key] = SPOOF_MESSAGE
            continue
        out[key] = _strip(item, in_liveness=in_liveness or key == "liveness")
    return out
