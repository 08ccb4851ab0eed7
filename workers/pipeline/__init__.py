"""Job pipelines built from the inference stages (enrollment, verification, identification)."""
