"""ttft-router: an OpenAI-compatible proxy that routes each model to its fastest provider."""

__version__ = "0.1.0"
