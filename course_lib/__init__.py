"""course_lib: the small library every notebook of the course calls.

Data flows one way: a workload makes requests, the scheduler picks what runs
this iteration, the KV store says where each token's keys and values live, the
model attends over them, the sampler appends tokens, and metrics record it.
"""

__version__ = "0.1.0"
