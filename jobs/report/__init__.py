"""Report: the run's HTML page (report.html with its plots), rendered from the run's record.

Uses: the store and the stages' read-only views; never the runtimes.
"""
