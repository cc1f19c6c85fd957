"""Mirrors of the run store in other tools (MLflow): copies for people to look at, never read back."""
