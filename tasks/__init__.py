"""Built-in task plugins of lceval; other packages add theirs through the `lceval.tasks` entry points."""

# Modules whose import registers the built-in tasks (loaded on first use of the registry).
BUILTIN_TASK_MODULES = [
    "lceval.tasks.needle",
    "lceval.tasks.longbench",
    "lceval.tasks.longbench_v2",
    "lceval.tasks.infinitebench",
    "lceval.tasks.lm_eval_tasks",
    "lceval.tasks.topic",
]
