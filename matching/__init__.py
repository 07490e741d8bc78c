"""Matching: the engine (``engine.py``, ``kernels.py``, ``rules.py``: numpy and numba only, no
web or database imports), its loader (rows ↔ arrays), overlaps, the coalition matrix, offers
and their controllers, and the partitioned form on a Dask cluster."""
