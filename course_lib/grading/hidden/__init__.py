"""Hidden cases: inputs the students never see, one module per exercise (`cases(rng)`).

Each module's `cases(rng)` returns {task: [Case, ...]}: fixed cases for the classes
of mistakes the public cases miss, then cases drawn from `rng` (random.Random seeded
by the grader's --case-seed, the lesson and the task). Their expected answers come
from the reference answers in solutions/, computed by the grader.
"""
