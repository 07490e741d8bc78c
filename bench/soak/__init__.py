"""A coalition's day under load (issue 19): a Locust soak harness.

``python -m bench.soak`` starts real processes on a fresh PostgreSQL database — two
``hub serve --no-worker`` on two loopback ports (the load is spread over both), one
``hub worker`` and a webhook receiver that verifies Standard Webhooks signatures — seeds four
brands and an admin through the API, plays a per-minute mix of traffic against them with
Locust (headless, its own stats) for ``--minutes``, stops by itself, lets the jobs catch up,
and ends with a consistency audit. See bench/README.md ("Soak") for the mix and the report.

Modules: ``mix`` (what a minute holds), ``population`` (the synthetic customers and upload
files), ``stack`` (the processes and their sampling), ``receiver`` (the webhook endpoint),
``coalition`` (seeding through the API), ``users`` (the Locust users), ``audit`` (the final
checks), ``report`` (numbers out), ``run`` (the whole run; ``__main__`` is its command line).
"""
