"""Report: a run's outcome (`outcome.py`: one record, read from the store once, that the report,
the `--json` summary and the mail render) and the run's HTML page (report.html with its plots).

Uses: the store and the stages' read-only views; never the runtimes.
"""
