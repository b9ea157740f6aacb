"""Layout snapshots with fixed content (no engine, no clock): regenerate with --snapshot-update."""

from snapshot_app import DomainsSnapshotApp


def test_domains_view_layout(snap_compare):
    assert snap_compare(DomainsSnapshotApp(), terminal_size=(120, 16))


def test_domains_view_at_80x24(snap_compare):
    assert snap_compare(DomainsSnapshotApp(), terminal_size=(80, 24))


def test_domains_view_sorted_by_cpu(snap_compare):
    assert snap_compare(DomainsSnapshotApp(), press=["3"], terminal_size=(120, 16))
