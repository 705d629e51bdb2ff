"""HTTP surfaces: the OpenAI API (/v1), the admin API (/admin), health and metrics."""
