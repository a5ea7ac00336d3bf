"""Published reference rows: AlpacaEval's own leaderboards, bundled inside the alpaca_eval package
(`alpaca_eval/leaderboards/data_AlpacaEval*/<annotator>_leaderboard.csv`), shown beside our board.

They are numbers AlpacaEval's authors published, computed on the 805 AlpacaEval instructions with
their judge (the annotator the file is named after) against their reference model. Our AlpacaEval
cells are win rates over our datasets, judged by our judge against our reference: a published row is
comparable only when judge and reference are the same, so it is shown apart, marked published, and
never ranked with our rows (`publish.reference_leaderboards` in a run config).
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from bridges import BenchbridgeError, did_you_mean

# The reference model each AlpacaEval version's leaderboards were computed against (its README).
REFERENCE = {"data_AlpacaEval": "text_davinci_003", "data_AlpacaEval_2": "gpt4_turbo"}
COLUMNS = ("leaderboard", "judge", "reference", "model", "win_rate", "standard_error", "length_controlled_winrate",
           "n_total", "mode", "avg_length")  # fmt: skip


@dataclass(frozen=True)
class ReferenceRow:
    """One published row: a model's numbers on one of AlpacaEval's bundled leaderboards."""

    leaderboard: str  # e.g. "weighted_alpaca_eval_gpt4_turbo" (the annotator config's name: the judge)
    judge: str
    reference: str
    model: str
    win_rate: float | None
    standard_error: float | None
    length_controlled_winrate: float | None
    n_total: int | None
    mode: str
    avg_length: int | None

    def cells(self) -> list[str]:
        return ["" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v) for v in self.__dict__.values()]


def bundled() -> dict[str, Path]:
    """Leaderboard name -> its CSV in the installed alpaca_eval package (found without importing it)."""
    spec = importlib.util.find_spec("alpaca_eval")
    if spec is None or not spec.origin:
        return {}
    root = Path(spec.origin).parent / "leaderboards"
    return {
        p.name.removesuffix("_leaderboard.csv"): p
        for folder in sorted(REFERENCE)
        for p in sorted((root / folder).glob("*_leaderboard.csv"))
    }


def check_names(names: list[str], key: str) -> None:
    """Every name is a bundled leaderboard; else one line naming the key, with the known names."""
    known = bundled()
    for i, name in enumerate(names):
        if name not in known:
            hint = did_you_mean(name, known)
            raise BenchbridgeError(
                f"{key}[{i}]: {name!r} is not a leaderboard bundled with alpaca_eval; {hint}"
                f"known: {', '.join(known) or 'none (alpaca_eval is not installed)'}"
            )


def _number(cell: str | None) -> float | None:
    try:
        return float(cell) if cell not in (None, "") else None
    except ValueError:
        return None


def reference_rows(names: list[str]) -> list[ReferenceRow]:
    """The rows of the named bundled leaderboards, each sorted as published (win rate, best first)."""
    known = bundled()
    check_names(names, "publish.reference_leaderboards")
    rows: list[ReferenceRow] = []
    for name in names:
        path = known[name]
        with path.open(encoding="utf-8") as fh:
            found = []
            for row in csv.DictReader(fh):
                n_total, length = _number(row.get("n_total")), _number(row.get("avg_length"))
                found.append(
                    ReferenceRow(
                        leaderboard=name,
                        judge=name,
                        reference=REFERENCE[path.parent.name],
                        model=row.get("") or row.get("name") or "",
                        win_rate=_number(row.get("win_rate")),
                        standard_error=_number(row.get("standard_error")),
                        length_controlled_winrate=_number(row.get("length_controlled_winrate")),
                        n_total=None if n_total is None else int(n_total),
                        mode=row.get("mode") or "",
                        avg_length=None if length is None else int(length),
                    )
                )
        rows += sorted(found, key=lambda r: -(r.win_rate or 0.0))
    return rows


def reference_md(rows: list[ReferenceRow], escape: object = str) -> list[str]:
    """The Markdown section: apart from the board, saying why."""
    if not rows:
        return []
    from leaderboards.publish import md_table

    names = sorted({r.leaderboard for r in rows})
    return [
        "## Published reference rows (AlpacaEval's leaderboards; not ranked with ours)",
        "",
        f"Numbers AlpacaEval published ({', '.join(names)}), bundled with the alpaca_eval package: win rates on "
        "AlpacaEval's 805 instructions, judged by the leaderboard's annotator against its reference model. "
        "Our AlpacaEval cells use our datasets, judge and reference, so these rows are shown apart and never "
        "ranked with ours.",
        "",
        md_table(["published", *COLUMNS], [["published", *r.cells()] for r in rows], right=range(5, 9)),
        "",
    ]


def reference_csv_rows(rows: list[ReferenceRow]) -> list[list[str]]:
    return [["published", *COLUMNS], *(["published", *r.cells()] for r in rows)]
