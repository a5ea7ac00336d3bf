"""Inline SVG charts for the published page: drawn by hand (no matplotlib fonts-as-paths, no
network), every text escaped. One grouped bar chart per benchmark (a bar per model and framework,
so frameworks that disagree are seen side by side) and one profile per model (a bar per column).
"""

from __future__ import annotations

from html import escape

from leaderboards.board import Board, Cell, Column, fmt

# Colour-blind-safe (Okabe-Ito); framework i takes colour i in the board's framework order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
WIDTH = 720
LABEL_WIDTH = 250
BAR_AREA = WIDTH - LABEL_WIDTH - 70
BAR = 14
GAP = 4
# A chart shows at most this many models (the board's first: the best ranked); a zoo of 500 models
# made a page of 26 MB, and a chart of 500 bars is read by no one (the table has every model).
CHART_ROWS = 25


def framework_colours(board: Board) -> dict[str, str]:
    return {fw: PALETTE[i % len(PALETTE)] for i, fw in enumerate(board.frameworks)}


def _short(text: str, limit: int = 38) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bar(y: float, cell: Cell, colour: str, label: str) -> str:
    """One horizontal bar with its value, or the cell's status where there is no value."""
    tip = f"{label}: {cell.text}" + (f" — {cell.reason}" if cell.reason else "")
    parts = [f'<g class="bar {cell.status}"><title>{escape(tip)}</title>']
    if cell.status == "ok" and cell.value_100 is not None:
        width = max(0.0, min(100.0, cell.value_100)) * BAR_AREA / 100
        parts.append(f'<rect x="{LABEL_WIDTH}" y="{y:.1f}" width="{width:.1f}" height="{BAR}" fill="{colour}"/>')
        parts.append(
            f'<text x="{LABEL_WIDTH + width + 4:.1f}" y="{y + BAR - 3:.1f}" class="val">{escape(cell.text)}</text>'
        )
    else:
        parts.append(
            f'<rect x="{LABEL_WIDTH}" y="{y:.1f}" width="{BAR_AREA}" height="{BAR}" class="empty {cell.status}"/>'
        )
        parts.append(f'<text x="{LABEL_WIDTH + 6}" y="{y + BAR - 3:.1f}" class="status">{escape(cell.text)}</text>')
    parts.append("</g>")
    return "".join(parts)


def _svg(title: str, height: float, body: list[str]) -> str:
    axis = [
        f'<line x1="{LABEL_WIDTH + BAR_AREA * t / 100:.1f}" y1="22" x2="{LABEL_WIDTH + BAR_AREA * t / 100:.1f}" '
        f'y2="{height - 18:.1f}" class="grid"/>'
        f'<text x="{LABEL_WIDTH + BAR_AREA * t / 100:.1f}" y="{height - 4:.1f}" class="tick">{t}</text>'
        for t in (0, 25, 50, 75, 100)
    ]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0f}" width="{WIDTH}" '
        f'height="{height:.0f}" role="img" aria-label="{escape(title)}">'
        f'<text x="0" y="14" class="title">{escape(title)}</text>' + "".join(axis) + "".join(body) + "</svg>"
    )


def benchmark_chart(board: Board, benchmark: str) -> str:
    """Bars grouped by model: one per framework/metric column of `benchmark`, coloured by framework."""
    columns = [c for c in board.columns if c.benchmark == benchmark]
    colours = framework_colours(board)
    body: list[str] = []
    y = 28.0
    for row in board.rows[:CHART_ROWS]:
        body.append(f'<text x="0" y="{y + BAR - 3:.1f}" class="model">{escape(_short(row.model, 90))}</text>')
        y += BAR + GAP
        for column in columns:
            label = f"{row.model} · {_column_label(column)}"
            body.append(_bar(y, row.cells[column.id], colours[column.framework], label))
            body.append(
                f'<text x="{LABEL_WIDTH - 6}" y="{y + BAR - 3:.1f}" class="series">'
                f"{escape(_short(f'{column.framework} {column.metric}', 30))}</text>"
            )
            y += BAR + GAP
        y += 8
    title = f"{benchmark} — 0-100, by framework ({', '.join(f'{c.metric} {c.arrow}' for c in columns)})"
    if len(board.rows) > CHART_ROWS:
        title += f" — the first {CHART_ROWS} of {len(board.rows)} models"
    return _svg(title, y + 20, body)


def profile_chart(board: Board, model: str) -> str:
    """One model across every column, coloured by framework."""
    row = board.row(model)
    colours = framework_colours(board)
    body: list[str] = []
    y = 28.0
    for column in board.columns:
        label = _column_label(column)
        body.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + BAR - 3:.1f}" class="series">{escape(_short(label))}</text>')
        body.append(_bar(y, row.cells[column.id], colours[column.framework], f"{model} · {label}"))
        y += BAR + GAP
    title = f"{model} — rank {row.rank_text}, average {fmt(row.average)} ({row.coverage} columns)"
    return _svg(title, y + 20, body)


def _column_label(column: Column) -> str:
    judged = f" @{column.judge}" if column.judge else ""
    return f"{column.framework} {column.benchmark_label} {column.metric}{judged} {column.arrow}"


def legend(board: Board) -> str:
    """Framework colours, as inline SVG swatches."""
    items = []
    for fw, colour in framework_colours(board).items():
        items.append(
            f'<span class="swatch"><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" '
            f'fill="{colour}"/></svg> {escape(fw)}</span>'
        )
    return " ".join(items)
