"""Reading user files (configs, cards, imported data) so that every problem is one line naming the file.

YAML is read with a loader that refuses a key given twice in one mapping (PyYAML keeps the last one
silently), and keeps the parsed node so a later validation error can name the line of its key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from bridges._errors import BenchbridgeError, where

# Model, dataset and config names become folder and file names (run folders, native configs, cache
# keys): a clear limit well under any file system's 255 bytes per name, leaving room for suffixes.
MAX_NAME = 100


def read_text(path: Path, what: str = "file") -> str:
    """The file's text (UTF-8, a leading byte-order mark dropped), or a one-line error naming it."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BenchbridgeError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise BenchbridgeError(f"{path}: is a folder; give the {what} itself") from None
    except UnicodeDecodeError as exc:
        raise BenchbridgeError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the {what} as UTF-8"
        ) from None
    except PermissionError:
        raise BenchbridgeError(f"{path}: cannot read the {what} (permission denied)") from None
    except OSError as exc:  # e.g. a name too long for the file system
        raise BenchbridgeError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader refusing a mapping key given twice (merge keys `<<` may still override)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable key: SafeLoader's own error names it
            line = key_node.start_mark.line + 1
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first})", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> BenchbridgeError:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{problem} ({context})" if context and "duplicate key" not in problem else problem
    return BenchbridgeError(f"{where(path, line)}: invalid YAML: {' '.join(text.split())}")


class YamlDoc:
    """A parsed YAML file: its data, and the line of each key (for validation errors)."""

    def __init__(self, path: Path, data: Any, node: yaml.Node | None) -> None:
        self.path = path
        self.data = data
        self.node = node

    def line(self, loc: tuple[Any, ...] | list[Any]) -> int | None:
        """The line of the deepest key or item of `loc` (e.g. ("models", 0, "name")) found in the file."""
        node = self.node
        line = None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                found = next(((k, v) for k, v in node.value if k.value == str(part)), None)
                if found is None:
                    break
                line = found[0].start_mark.line + 1
                node = found[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def where(self, loc: tuple[Any, ...] | list[Any]) -> str:
        """`file:line` for `loc` (just `file` when it is not in the file, e.g. a missing key)."""
        return where(self.path, self.line(loc))


def read_yaml(path: Path, what: str = "file") -> YamlDoc:
    """Parses one YAML document; not found, folder, non-UTF-8, bad syntax and duplicate keys are one line."""
    text = read_text(path, what)
    loader = UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    finally:
        loader.dispose()
    return YamlDoc(path, data, node)


def loc_text(loc: tuple[Any, ...] | list[Any]) -> str:
    """Pydantic's error location as a key path: ("models", 0, "name") -> models[0].name."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def path_kind(path: Path, key: str | None = None) -> str | None:
    """"dir", "file" (anything not a folder), or None when nothing is there. A path the file system
    refuses to look up (a name over its length limit, a loop of links) is a one-line error."""
    try:
        return "dir" if path.stat().st_mode & 0o040000 else "file"
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        at = f"{key}: " if key else ""
        raise BenchbridgeError(f"{at}{path}: {exc.strerror or exc}; give a shorter or other path") from None


def check_dir_writable(path: Path, key: str) -> None:
    """`path` is a writable folder, or can be made one: no file in the way, the nearest existing
    ancestor a folder we may write into. Nothing is created."""
    probe = path
    while path_kind(probe, key) is None:
        if probe.parent == probe:
            break
        probe = probe.parent
    if path_kind(probe, key) != "dir":
        what = "is a file" if probe == path else f"cannot be made: {probe} is a file"
        raise BenchbridgeError(f"{key}: {path} {what}; give a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BenchbridgeError(f"{key}: {path}: {probe} is not writable; give a folder you may write to")
