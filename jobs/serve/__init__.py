"""Serve: the HTTP model server (FastAPI + uvicorn) behind `pushtune serve`, answering with the
production version of each name; it loads models only through jobs.deploy.loading.

Uses: deploy and store; never the pipeline, the runtimes or Jenkins.
"""
