"""lm-evaluation-harness: `bridge` writes task YAML (from `templates/`) and jobs; `worker` runs each job."""
