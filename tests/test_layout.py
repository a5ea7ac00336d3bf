"""The package layout: each framework's native templates are data files found from their folder."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import ROOT

FRAMEWORKS_DIR = ROOT / "bridges" / "frameworks"


def test_evals_methods_and_grader_specs_are_data_beside_the_bridge() -> None:
    from bridges.frameworks.openai_evals.bridge import METHODS, SPECS_DIR

    table = yaml.safe_load((FRAMEWORKS_DIR / "openai_evals" / "methods.yaml").read_text("utf-8"))
    assert list(METHODS) == list(table) == ["match", "includes", "fuzzy_match", "fact", "fact_zh", "closedqa", "closedqa_zh"]
    assert METHODS["closedqa_zh"].criteria == table["closedqa_zh"]["criteria"] == "正确性：提交的答案是否正确，并与参考答案一致？"
    assert METHODS["fact"].eval_args("s.jsonl") == {
        "samples_jsonl": "s.jsonl",
        "modelgraded_spec": "bb_fact",
        "eval_type": "cot_classify",
    }
    assert METHODS["fact_zh"].eval_type is None and METHODS["match"].spec is None
    # Every spec a method names is a file of grader_specs/, and every file there is a spec some method uses.
    specs = {p.stem for p in SPECS_DIR.glob("*.yaml")}
    assert specs == {m.spec for m in METHODS.values() if m.spec} == {"bb_fact", "bb_fact_zh", "bb_closedqa", "bb_closedqa_zh"}
    for spec in specs:
        assert spec in yaml.safe_load((SPECS_DIR / f"{spec}.yaml").read_text("utf-8"))


def test_lm_eval_templates_are_copied_byte_for_byte_and_included_by_every_task(tmp_path: Path) -> None:
    from tests.test_lm_eval import bridge_for

    templates = FRAMEWORKS_DIR / "lm_eval" / "templates"
    names = sorted(p.name for p in templates.iterdir())
    assert names == ["_bb_mcq_gen_template_yaml", "_bb_mcq_template_yaml", "_bb_qa_template_yaml"]
    bridge = bridge_for(tmp_path, [{"name": "m", "kind": "hf", "path": "/"}])
    bridge.prepare(tmp_path / "out")
    tasks = tmp_path / "out" / "tasks"
    for name in names:  # comments included: what runs is the checked-in file
        assert (tasks / name).read_bytes() == (templates / name).read_bytes()
    included = {
        yaml.safe_load(p.read_text("utf-8"))["include"] for p in tasks.glob("*/*.yaml") if "include" in p.read_text("utf-8")
    }
    assert included == {f"../{n}" for n in names}
    # The log-likelihood variant's `letters` prompt is the generation template's, not a second copy.
    letters = yaml.safe_load((tasks / "mcq_science_en" / "bb_mcq_science_en.yaml").read_text("utf-8"))
    gen = yaml.safe_load((templates / "_bb_mcq_gen_template_yaml").read_text("utf-8"))
    assert letters["doc_to_text"] == gen["doc_to_text"] and letters["doc_to_choice"] == "letters"


# ------------------------------------------------------------------ public API and private imports

SOURCE_PACKAGES = ("bridges", "leaderboards", "benchmarks", "scripts")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_owner(dotted: str) -> str | None:
    """For `a.b._c.d`, the package or module a private name belongs to (`a.b`); None if all public."""
    parts = dotted.split(".")
    owner = None
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            owner = ".".join(parts[:i])
    return owner


def cross_package_private_imports(path: Path) -> list[str]:
    """Imports in `path` of a private name (`_x`) whose owner does not contain the importing module."""
    import ast

    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names]
        for dotted in names:
            owner = private_owner(dotted)
            if owner is not None and not (me == owner or me.startswith(owner + ".")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {dotted}")
    return found


def test_private_owner_examples() -> None:
    assert private_owner("bridges.models._hf.check_local_path") == "bridges.models"
    assert private_owner("bridges._config._environment") == "bridges._config"
    assert private_owner("bridges.records.Record") is None
    assert private_owner("bridges.__version__") is None


def test_no_module_imports_another_packages_private_names() -> None:
    """`leaderboards` uses only public names of `bridges` (and the reverse); a subpackage such as
    `bridges.frameworks.lm_eval` uses only public names of `bridges.models`; `bridges._config`'s private
    helpers stay in that module. Tests may look inside (they test the private units)."""
    found = [
        hit
        for package in SOURCE_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for hit in cross_package_private_imports(path)
    ]
    assert found == []


def test_the_public_api_is_exported_and_documented() -> None:
    import bridges

    for name in ("run", "prepare", "load_config", "Record", "Sample", "FRAMEWORKS", "MODEL_KINDS", "IMPORTERS",
                 "framework", "importer", "python_model", "BenchbridgeError", "FrameworkFailure", "RunOutcome"):
        assert name in bridges.__all__ and getattr(bridges, name) is not None, name
        assert name in (bridges.__doc__ or ""), f"{name} is exported but the package docstring does not say so"
    assert bridges.run.__module__ == "bridges._runner" and bridges.run.__doc__
    assert bridges.FRAMEWORKS.get("lm_eval").__module__ == "bridges.frameworks.lm_eval.bridge"


# ------------------------------------------------------------------ the wheel


def test_the_wheel_has_the_templates_and_no_published_board(tmp_path: Path) -> None:
    """Built from a copy of the tree with a published demo board in it (as scripts/demo.sh leaves one)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "demo")
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("bridges", "leaderboards"):
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    demo = src / "leaderboards" / "demo"
    (demo / "cells").mkdir(parents=True)
    for name in ("index.html", "board.json", "page.css", "page.js", "README.md", "cells/c0.js"):
        (demo / name).write_text("published", encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("benchbridge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if "/demo/" in n] == []
    for expected in (
        "bridges/frameworks/lm_eval/templates/_bb_qa_template_yaml",
        "bridges/frameworks/lm_eval/templates/_bb_mcq_template_yaml",
        "bridges/frameworks/lm_eval/templates/_bb_mcq_gen_template_yaml",
        "bridges/frameworks/openai_evals/methods.yaml",
        "bridges/frameworks/openai_evals/grader_specs/bb_fact_zh.yaml",
        "bridges/frameworks/opencompass/model.py",
        "bridges/frameworks/lm_eval/worker.py",
        "leaderboards/templates/page.js",
        "leaderboards/schemas/every_eval_ever.eval.schema.json",
    ):
        assert expected in names, expected
