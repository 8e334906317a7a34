"""Stand-in for `isaaclab_rl` (tests only)."""
