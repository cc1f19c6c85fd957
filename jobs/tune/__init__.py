"""Tune: what to change when an attempt falls short. The objective (metric, direction, threshold),
the diagnosis of a training curve, the tuning strategies and the source tweaks (libcst rewrites).

Uses: only jobs.autolog's record of an attempt and the ground modules; it knows nothing of
runtimes or Docker (import-linter: tune may not import train).
"""
