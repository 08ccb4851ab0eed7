"""The gateway's routes: submissions, jobs, users under ``/v1``; health, metrics, docs."""
