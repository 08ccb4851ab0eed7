"""Offline training jobs. The only place torch is imported; workers never import this package."""
