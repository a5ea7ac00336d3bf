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
