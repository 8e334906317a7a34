"""Stand-in for Isaac Lab's `isaaclab` package (tests only; see ../README.md)."""
