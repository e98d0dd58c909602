"""Everything after a run, reading run folders only: compare, statistics, gate, report, plots."""
