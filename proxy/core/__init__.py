"""The words and primitives every layer shares: domain types, the error tree, the request id,
deadlines, loop ticks. Imports nothing else of the proxy.
"""
