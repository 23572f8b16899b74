"""Outbound relay: the durable queue, routes, the delivery worker and DSNs."""
