"""AlpacaEval annotations -> `Sample` rows.

`make_leaderboard` writes each model's judged pairs to `results/<model>/annotations.json`: per
instruction `output_1` (the reference's, `generator_1`) and `output_2` (the model's, `generator_2`),
the judge's `preference` (1: the reference wins, 2: the model wins, 1.5: a draw, in between for a
weighted judge; None or -1: the judge's answer could not be parsed) and `preference_raw_completion`,
the judge's own answer. The per-sample win score is `preference - 1`, whose mean x 100 is AlpacaEval's
`win_rate`; an unparsed judgement is invalid and left out, as AlpacaEval leaves it out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridges.records import Judgement, Sample

WIN_METRIC = "win_rate"


def _score(preference: Any) -> float | None:
    if isinstance(preference, bool) or not isinstance(preference, int | float) or preference != preference:
        return None
    return None if preference < 1 else float(preference) - 1.0  # -1: AlpacaEval's failed parse


def annotation_samples(
    path: Path, ids: dict[str, str], *, run_id: str, model: str, benchmark: str, judge: str
) -> list[Sample]:
    """One model's annotations file -> one Sample per judged instruction (ids: instruction -> our id)."""
    if not path.is_file():
        return []
    samples = []
    for row in json.loads(path.read_text(encoding="utf-8") or "[]"):
        if row.get("generator_2") not in (None, model):
            continue  # not this model's pair
        instruction = row.get("instruction")
        score = _score(row.get("preference"))
        raw = row.get("preference_raw_completion")
        preference = row.get("preference")
        samples.append(
            Sample(
                run_id=run_id,
                model=model,
                framework="alpaca_eval",
                benchmark=benchmark,
                sample_id=ids.get(instruction, str(instruction)),
                prompt=None if instruction is None else str(instruction),
                output=row.get("output_2"),
                references=[] if row.get("output_1") is None else [str(row["output_1"])],
                scores={WIN_METRIC: score},
                invalid=score is None,
                judge=Judgement(
                    model=str(row.get("annotator") or judge),
                    verdict=None if preference is None else str(preference),
                    reasoning=None if raw is None else raw if isinstance(raw, str) else json.dumps(raw),
                ),
                extra={k: row[k] for k in ("generator_1", "generator_2") if k in row},
            )
        )
    return samples
