"""Presentation-attack detection (PAD) evaluation: ISO/IEC 30107-3 metrics, sets, plots."""
