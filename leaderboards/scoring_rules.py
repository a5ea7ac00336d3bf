"""Which scoring rule each framework's metric applies, so the agreement report can tell "same input,
different scoring rule" from "different input" (issue 17).

In `prompt_mode: parity` every framework sent the model the same conversation per sample, so the
model's answers are the same; cells that apply the same rule (exact match in lm-eval and OpenCompass)
must then be equal, and any gap left between cells is the rule's, named here. In `native` mode the
inputs differ too, and a gap may be either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bridges.records import Record

EXACT_MATCH = "exact match"
# (framework, metric) -> the rule, in words. Metrics not listed are their own rule (named by the metric).
RULES: dict[tuple[str, str], str] = {
    ("lm_eval", "exact_match,strip"): EXACT_MATCH,  # whitespace, case and punctuation ignored
    ("opencompass", "exact_match"): EXACT_MATCH,  # EMEvaluator: after general_postprocess (case, punctuation)
    ("lm_eval", "exact_match,letter"): "the letter the answer starts with",
    # OptionSimAccEvaluator / first_capital_postprocess: an option letter found in the answer, else the option
    # whose text is most like the answer (so it can score an answer lm-eval's letter rule finds no letter in).
    ("opencompass", "accuracy"): "the option found in the answer",
    ("lm_eval", "acc,none"): "option log-likelihood",
    ("lm_eval", "acc_norm,none"): "option log-likelihood (length-normalised)",
    ("openai_evals", "match_accuracy"): "answer starts with the key",
    ("openai_evals", "includes_accuracy"): "answer contains the key",
    ("openai_evals", "fuzzy_match_accuracy"): "fuzzy match",
}

PARITY = "parity"


def rule_of(record: Record) -> str:
    return RULES.get((record.framework, record.metric), record.metric)


def prompts_of(rows: Sequence[Record]) -> str:
    """`parity` when every cell's record says its framework sent the canonical conversation, `native`
    when none did, else `mixed`; records written before prompt modes existed count as native."""
    modes = {(r.extra or {}).get("prompt_mode") or "native" for r in rows}
    return modes.pop() if len(modes) == 1 else "mixed"


def same_rule_diff(rows: Sequence[Record], column: Callable[[Record], str]) -> tuple[float | None, str]:
    """The largest gap between cells that apply one rule (None: no rule is shared by two cells), and the
    rules in words: ``exact match: lm_eval, opencompass (0.00 apart); answer contains the key: ...``."""
    by_rule: dict[str, list[Record]] = {}
    for r in rows:
        by_rule.setdefault(rule_of(r), []).append(r)
    gaps = []
    parts = []
    for rule, members in sorted(by_rule.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        names = ", ".join(sorted(column(r) for r in members))
        values = [r.value_100 for r in members if r.value_100 is not None]
        if len(members) > 1 and values:
            gap = max(values) - min(values)
            gaps.append(gap)
            parts.append(f"{rule}: {names} ({gap:.2f} apart)")
        else:
            parts.append(f"{rule}: {names}")
    return (max(gaps) if gaps else None), "; ".join(parts)


def prompt_modes_line(records: Sequence[Record]) -> str | None:
    """Which prompt mode produced the board's values (issue 17), or None for records from before modes."""
    modes: dict[str, int] = {}
    for r in records:
        if r.status == "ok" and r.primary and (mode := (r.extra or {}).get("prompt_mode")):
            modes[mode] = modes.get(mode, 0) + 1
    if not modes:
        return None
    counts = ", ".join(f"{mode} for {n} value{'s' if n != 1 else ''}" for mode, n in sorted(modes.items()))
    return (
        f"Prompt mode: {counts}. parity: every framework sent the model the same conversation per sample "
        "(system prompt merged once, one chat template), so a gap between frameworks is their scoring rule; "
        "native: each framework's own prompt conventions (a framework's built-in benchmarks are always native)."
    )
