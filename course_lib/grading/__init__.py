"""The grader's own code: kept with the solutions, never shipped to students (`make release`).

    lessons.py    which checks module, hidden cases and solution each exercise has
    reference.py  the reference answers: the solution notebooks' functions, run here
    cases.py      every case of a task (public, hidden, random) and its expected line
    assemble.py   the notebook nbval checks: the submission's answers, the cases' cells
    plugin.py     the pytest plugin: judges outside the kernel, CPU-time limits, results
    run.py        runs `pytest --nbval` on an assembled notebook in a fresh process
    report.py     scores (partial credit), the teacher's table, Gradescope's results.json
    flags.py      answers that call course_lib's own implementation of their task
    release.py    `make release`: the bundle students get
The command is course_lib.grade.
"""
