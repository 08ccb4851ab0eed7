"""Deployment: embedded dev stack, SQL migrations, container files."""
