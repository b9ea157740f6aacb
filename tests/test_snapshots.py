"""Layout snapshots with fixed content (no engine, no clock): regenerate with --snapshot-update."""

import pytest
from snapshot_app import DomainsSnapshotApp, RebalanceSnapshotApp


def test_domains_view_layout(snap_compare):
    assert snap_compare(DomainsSnapshotApp(), terminal_size=(120, 16))


def test_domains_view_at_80x24(snap_compare):
    assert snap_compare(DomainsSnapshotApp(), terminal_size=(80, 24))


def test_domains_view_sorted_by_cpu(snap_compare):
    assert snap_compare(DomainsSnapshotApp(), press=["3"], terminal_size=(120, 16))


def test_rebalance_suggestion_explains_itself(snap_compare):
    """g on fixed figures: every step with its reason, the host before and after, what it left (notes)."""
    assert snap_compare(RebalanceSnapshotApp(), press=["g"], terminal_size=(160, 30))


@pytest.mark.parametrize("theme", ["textual-light", "pvtui-colour-blind", "ansi-dark", "monokai"])
def test_state_and_level_colours_in_each_theme(snap_compare, theme):
    """Running, blocked, paused and crashed rows apart, CPU% and MEM% shaded by level, in this theme."""
    assert snap_compare(DomainsSnapshotApp(theme), terminal_size=(120, 16))


def test_history_plots_on_fixed_data(snap_compare):
    """CPU per vCPU (one born mid-way: no line before it), memory, hypercalls per kind, with both axes."""
    from snapshot_app import PlotSnapshotApp

    assert snap_compare(PlotSnapshotApp(), terminal_size=(110, 45))
