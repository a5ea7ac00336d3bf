"""Results store, merged board and published leaderboard.

Small public API: `load(db_or_records) -> DataFrame`, `build_board(records) -> Board`,
`open_board(db_or_records) -> Board`, `publish(board, out)`, `ResultsStore`.
"""

from leaderboards.board import Board, build_board, load, open_board
from leaderboards.store import ResultsStore

__all__ = ["Board", "ResultsStore", "build_board", "load", "open_board"]
