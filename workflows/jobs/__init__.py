"""The job workflows: ``jobs.lifecycle`` (one per job) and ``jobs.scheduler`` (one per task queue)."""
