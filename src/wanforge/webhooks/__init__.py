"""Webhooks: signed POSTs of a prediction to its caller when it reaches a terminal status."""
