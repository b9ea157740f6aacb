"""pvd, the engine daemon: one monitor process per domain, a registry, admission control and events."""
