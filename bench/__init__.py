"""Side-by-side benchmark of the serving bundle against the baselines a user would otherwise pick (issue 5)."""
