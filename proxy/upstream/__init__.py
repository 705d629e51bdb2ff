"""Upstream clients: the only place that knows aiohttp and litellm."""
