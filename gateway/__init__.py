"""The HTTP gateway: faceauth's REST API (FastAPI on uvicorn), one more producer.

It authenticates API keys, streams uploads under byte limits, writes the job row and
sends the message through ``shared.producer.FaceauthClient``, and reads outcomes from
Postgres. It never loads a model: importing it pulls in no ONNX Runtime, InsightFace,
torch or OpenCV, and nothing from ``workers`` (an import-linter contract and
``tests/test_gateway_unit.py`` keep it so).

Modules: ``app`` (assembly), ``auth``, ``ratelimit``, ``bodylimit``, ``uploads``,
``bodies``, ``fingerprint``, ``redact``, ``waiting``, ``views``, ``problems``,
``metrics``, ``routes/``, ``server`` (uvicorn), ``cli`` (``faceauth gateway`` and
``faceauth apikey``), ``apidoc`` (the OpenAPI document), ``openapi`` (the committed
``openapi.json``).

This file imports nothing, so ``faceauth --help`` does not pay for FastAPI.
"""
