"""The request path after routing: endpoints, the attempt race (failover, hedging), forwarding,
metering, recording.
"""
