"""Lesson experiments and reports that sit above the engine and the KV stores.

paging.py      lessons 04 and 05: block-size sweep, preemption by recompute vs swap, parallel
               sampling with fork + copy-on-write, prefix caching off and on, pool replays
scheduling.py  lesson 06: the starvation, mixed and deadline traces; per-class reports

Nothing below imports from here: a lab builds stores and engines, runs them, and
returns plain numbers and records for the plots.
"""
