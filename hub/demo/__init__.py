"""``hub demo``: a demo coalition with synthetic customers in the configured database.

Four non-competing brands (an airline, a hotel chain, a coffee chain and a bank card) with
customer bases drawn from one synthetic population and hashed with the partner kit,
partnerships, a joint offer with its audiences, reward activity, and one run of every job.
See :mod:`hub.demo.build` for the stages.
"""

from hub.demo.build import DemoOptions, run_demo
from hub.demo.report import render_summary

__all__ = ["DemoOptions", "render_summary", "run_demo"]
