"""What the operator wrote: config.yaml, the routing policies, and the prices derived from them."""
