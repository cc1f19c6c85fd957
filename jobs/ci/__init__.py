"""CI: what drives the pipeline from outside. The Jenkins job chain (render, install, trigger), the
git post-receive hook and the monitor that resumes runs whose training died.

Uses: the pipeline steps (jobs.steps, jobs.loop) below it; only the CLI commands sit above.
"""
