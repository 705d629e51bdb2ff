"""Active measurement: scheduled probes of every pair, their leases and budget."""
