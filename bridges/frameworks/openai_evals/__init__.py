"""OpenAI evals: `bridge` writes and runs a registry; `completion` runs inside `oaieval`; grader specs are data."""
