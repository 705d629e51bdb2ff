"""Counting what happens: Prometheus metrics, the optional OTLP export, log formats."""
