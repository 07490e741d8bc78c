"""Scheduled jobs: the registry of jobs, their runs under a database lease, the scheduler."""
