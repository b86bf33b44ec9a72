"""Worker actors on a Ray cluster (`wanforge workers --ray ADDRESS`).

Ray places the worker actors (one per GPU, or CPU-only ones) and restarts those that die; each
actor runs the same `WorkerLoop` as a worker process, claiming leased jobs from the store, so the
store, not Ray, stays the source of truth for every job. Only the CLI imports this package.
"""
