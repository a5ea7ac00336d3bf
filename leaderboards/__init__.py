"""Results store, merged board and published leaderboard.

Small public API:

- `load(db_path_or_records, ...) -> pandas.DataFrame`: the board (wide; `long=True`: one row per cell
  with status, reason and provenance)
- `build_board(records, ...) -> Board`, `open_board(db_path_or_records, ...) -> Board`
- `publish_config(config) -> Published`: build a run config's board and write every format
  (`leaderboards.publish.publish(board, out)` for any board)
- `ResultsStore(path)`: the append-only SQLite results database
"""

from leaderboards.board import Board, build_board, load, open_board
from leaderboards.publish import Published, publish_config
from leaderboards.store import ResultsStore

__all__ = ["Board", "Published", "ResultsStore", "build_board", "load", "open_board", "publish_config"]
