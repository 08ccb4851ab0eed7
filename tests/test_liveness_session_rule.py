"""The decision rule of a liveness session's frames, and what clients may see of it."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from gateway.redact import strip_spoof_scores
from workers.pipeline.liveness_rule import (
    Frame,
    SessionDecision,
    decide_session,
    medoid_index,
    upper_median,
)

T_LOW = 0.28
SPOOF_T = 0.6


def unit(*values: float) -> npt.NDArray[np.float32]:
    v = np.asarray(values, dtype=np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


ALICE = unit(1.0, 0.1, 0.0)
ALICE_2 = unit(1.0, 0.0, 0.2)  # cos(ALICE, ALICE_2) ~ 0.97
BOB = unit(0.0, 1.0, 0.1)  # cos(ALICE, BOB) ~ 0.1


def frame(key: str, emb: npt.NDArray[np.float32] | None, spoof: float, **kw: float) -> Frame:
    return Frame(key, usable=emb is not None, spoof_score=spoof, embedding=emb, **kw)  # type: ignore[arg-type]


def decide(frames: list[Frame]):  # type: ignore[no-untyped-def]
    return decide_session(frames, same_person_min=T_LOW, spoof_threshold=SPOOF_T)


def test_upper_median_sends_a_tie_to_the_higher_score() -> None:
    assert upper_median([0.1]) == 0.1
    assert upper_median([0.9, 0.1]) == 0.9
    assert upper_median([0.1, 0.9, 0.2]) == 0.2
    assert upper_median([0.1, 0.2, 0.8, 0.9]) == 0.8
    with pytest.raises(ValueError):
        upper_median([])


def test_live_frames_of_one_person_pass_and_the_best_frame_is_the_probe() -> None:
    frames = [
        frame("a", ALICE, 0.01, det_score=0.80, sharpness=50),
        frame("b", ALICE_2, 0.05, det_score=0.90, sharpness=10),
        frame("c", ALICE, 0.02, det_score=0.90, sharpness=40),
    ]
    verdict = decide(frames)
    assert verdict.decision is SessionDecision.LIVE and verdict.passed
    assert verdict.reasons == []
    assert verdict.spoof_score == pytest.approx(0.02)  # the median of 0.01, 0.02, 0.05
    assert verdict.probe == 2  # highest detector score, then the sharper of the two
    assert verdict.similarities is not None and min(verdict.similarities) > 0.9


def test_one_odd_frame_does_not_decide_but_a_spoof_majority_does() -> None:
    glare = [frame("a", ALICE, 0.01), frame("b", ALICE, 0.95), frame("c", ALICE, 0.02)]
    assert decide(glare).decision is SessionDecision.LIVE
    replay = [frame("a", ALICE, 0.01), frame("b", ALICE, 0.99), frame("c", ALICE, 0.97)]
    verdict = decide(replay)
    assert verdict.decision is SessionDecision.SPOOF
    assert verdict.spoof_score == pytest.approx(0.97) and verdict.probe is None
    assert verdict.reasons == ["spoof_suspected"]
    # Half and half: the upper median goes to spoof.
    assert decide([frame("a", ALICE, 0.0), frame("b", ALICE, 0.99)]).decision == "spoof"
    # A single frame is decided by its own score, at the same boundary as one probe.
    assert decide([frame("a", ALICE, SPOOF_T)]).decision is SessionDecision.LIVE
    assert decide([frame("a", ALICE, SPOOF_T + 1e-6)]).decision is SessionDecision.SPOOF


def test_frames_of_two_people_differ_even_when_every_frame_looks_live() -> None:
    verdict = decide([frame("a", ALICE, 0.0), frame("b", ALICE_2, 0.0), frame("c", BOB, 0.0)])
    assert verdict.decision is SessionDecision.FACES_DIFFER
    assert verdict.reasons == ["session_faces_differ"]
    assert verdict.medoid in (0, 1)  # an Alice frame is the reference, Bob's is the outlier
    assert verdict.similarities is not None and verdict.similarities[2] < T_LOW
    # Checked before the spoof score: a replay of someone else is "faces differ".
    assert decide([frame("a", ALICE, 0.0), frame("b", BOB, 0.99)]).decision == "faces_differ"


def test_medoid_is_the_frame_closest_to_all_others() -> None:
    assert medoid_index(np.stack([BOB, ALICE, ALICE_2])) in (1, 2)
    assert medoid_index(np.stack([BOB, ALICE])) == 0  # two frames: the first


def test_an_unusable_frame_fails_quality_before_anything_else() -> None:
    verdict = decide([frame("a", ALICE, 0.0), frame("b", None, 0.99)])
    assert verdict.decision is SessionDecision.QUALITY_FAILED
    assert verdict.reasons == ["quality_rejected"] and verdict.spoof_score is None
    assert not SessionDecision.QUALITY_FAILED.about_the_person
    assert SessionDecision.SPOOF.about_the_person and SessionDecision.FACES_DIFFER.about_the_person
    with pytest.raises(ValueError):
        decide([])


def test_a_session_result_shows_non_admin_keys_no_raw_spoof_score() -> None:
    result = {
        "decision": "spoof",
        "reasons": [{"code": "spoof_suspected", "message": "possible presentation attack"}],
        "liveness": {"checked": True, "threshold": 0.6, "spoof_score": 0.97},
        "frames": [
            {
                "image_key": "k",
                "liveness": {"spoof_score": 0.97, "threshold": 0.6},
                "quality": {"det_score": 0.9, "spoof_score": 0.97},
                "reasons": [],
                "similarity_to_reference": 1.0,
            }
        ],
    }
    shown = strip_spoof_scores(result)
    assert "0.97" not in repr(shown)
    assert shown["decision"] == "spoof" and shown["reasons"][0]["code"] == "spoof_suspected"
    assert shown["liveness"]["threshold"] == 0.6
