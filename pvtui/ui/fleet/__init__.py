"""The fleet view: every domain of several hosts in one table, one connection and worker per host."""
