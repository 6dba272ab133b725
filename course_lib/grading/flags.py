"""Flag (never block) an answer that calls course_lib's own implementation of its task.

Two views, both reported as a note on the task for the teacher to read:

* the source: names the submission imports from course_lib (`from course_lib.padding
  import bucket_by_length`, `import course_lib.padding as P` then `P.bucket_by_length`),
  and any dynamic import of course_lib;
* the kernel: what the function refers to when it is checked
  (course_lib.checks.core.describe: its module and the course_lib objects its code names).
"""

from __future__ import annotations

import ast
import json

from course_lib.grading.lessons import IMPLEMENTATIONS


def imported_names(sources: list[str]) -> tuple[set[str], bool]:
    """('module:name' of every course_lib object the cells import or use, whether they import it dynamically)."""
    found, dynamic = set(), False
    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        modules = {}                                   # local name -> course_lib module
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("course_lib"):
                for a in node.names:
                    found.add(f"{node.module}:{a.name}")
                    modules[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("course_lib"):
                        modules[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if name in ("__import__", "import_module") and not all(
                        isinstance(a, ast.Constant) and not str(a.value).startswith("course_lib") for a in node.args):
                    dynamic = True
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                chain, base = [node.attr], node.value
                while isinstance(base, ast.Attribute):
                    chain.append(base.attr)
                    base = base.value
                if isinstance(base, ast.Name) and base.id in modules:
                    parts = [modules[base.id]] + chain[::-1]
                    found.add(f"{'.'.join(parts[:-1])}:{parts[-1]}")
    return found, dynamic


HOOKS = ("events.register", "input_transformers", "ast_transformers", "run_case", "course_lib.checks.core",
         "sys.settrace", "sys.setprofile", "_getframe")


def notebook_flags(sources: list[str]) -> list[str]:
    """Notes about the notebook as a whole: code that changes how cells run or reaches for the grader's routine."""
    text = "\n".join(sources)
    hits = [h for h in HOOKS if h in text]
    return [f"flag: the notebook uses {', '.join(hits)} (changes how cells run, or reaches for the grader's "
            "routine); its results were still judged outside the kernel; read it"] if hits else []


def flags(task: str, sources: list[str], described: str | None) -> list[str]:
    """Notes for `task`: the course_lib implementations of it that the answer uses."""
    own = set(IMPLEMENTATIONS.get(task, []))
    if not own:
        return []
    names, dynamic = imported_names(sources)
    try:
        refs = set(json.loads(described)) if described else set()
    except (ValueError, TypeError):
        refs = set()
    hits = sorted(p for p in own if p in names or p in refs or any(r.endswith(p.split(":")[1]) and
                                                                     r.startswith(p.split(":")[0]) for r in refs))
    notes = []
    if hits:
        notes.append(f"flag: uses {', '.join(hits)}, course_lib's own implementation of this task "
                     "(not blocked; for the teacher to read)")
    elif dynamic:
        notes.append("flag: imports course_lib dynamically (__import__ / importlib); read the answer")
    return notes
