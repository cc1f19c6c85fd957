"""Store: the single source of truth for runs, attempts, events and model versions (SQLite or
PostgreSQL), and the leases that say which agent drives which run.

Uses: only the ground modules (errors, paths, clock).
"""
