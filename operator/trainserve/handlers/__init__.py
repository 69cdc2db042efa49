"""Kopf wiring: thin handlers that feed the controllers."""
