"""The contracts a plugin author reads: task, backend, registry, errors, settings, prompt formats and the
run-folder schema."""
