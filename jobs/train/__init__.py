"""Train: one attempt of a run, in a runtime. The runtimes (local process, one Docker container per
attempt) behind one interface and a registry, the images and the profiles that pick them, and what
an attempt leaves behind read back (metrics, per-epoch progress).

Uses: tune (a profile names its tweak ladder), store (leases of running attempts) and the sandbox
side (jobs.kit, jobs.launch, jobs.autolog: what runs inside the attempt).
"""
