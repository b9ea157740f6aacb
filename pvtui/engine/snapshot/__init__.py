"""Snapshots of running domains: the file format, state capture, save/restore and live migration."""
