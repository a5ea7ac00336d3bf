"""Wall time of `benchbridge run` on a small OpenCompass job next to the same job run by hand.

    .venv/bin/python benchmarks/opencompass_overhead.py [--quick] [--repeat N]

The job is the documented `configs/ceval_internlm2.yaml` (ceval_gen, 2 bundled subjects x 4
questions, 5-shot) with a tiny random Qwen2 built on the fly in place of internlm2. Rows:

- `benchbridge run` as shipped (execution: auto -> every task inside one OpenCompass process);
- the config `benchbridge prepare` writes, run by hand with `opencompass` and OpenCompass's stock
  LocalRunner (one `python` per task) in a plain environment (tensorflow importable), as a user
  who writes the config by hand gets it; then the same with USE_TF=0, and with `--debug`;
- `benchbridge run` with `execution: subprocess` (the by-hand runner), to show what our own layer
  costs on top of OpenCompass;
- the import cost of one OpenCompass process, which each of those processes pays.

--quick skips the two slowest reference rows; --repeat N keeps the fastest of N runs per row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONFIG = ROOT / "configs" / "ceval_internlm2.yaml"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


REPEAT = 1  # --repeat: each row is the fastest of this many runs (the machine is shared and noisy)


def timed(cmd: list[str], env: dict[str, str], cwd: Path, before: Callable[[], None] = lambda: None) -> float:
    best = float("inf")
    for _ in range(REPEAT):
        before()
        started = time.perf_counter()
        done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        best = min(best, seconds)
    return best


def processes(oc_folder: Path) -> int:
    """1 CLI process + one per task log OpenCompass's LocalRunner wrote (each task is a `python`)."""
    (work,) = oc_folder.glob("outputs/2*")
    return 1 + sum(1 for _ in (work / "logs").rglob("*.out"))


def write_config(tmp: Path, name: str, execution: str) -> Path:
    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    raw["name"] = name
    raw["work_dir"] = str(tmp / "runs")
    raw["frameworks"]["opencompass"]["execution"] = execution
    raw["frameworks"]["opencompass"]["builtin_datasets"][0]["data_dir"] = str(ROOT / "custom_datasets" / "ceval_mini")
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the slowest reference rows")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row; the fastest counts (default 1)")
    args = parser.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)

    sys.path.insert(0, str(ROOT))
    from bridges.testing import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="bb_oc_bench_"))
    prep = tmp / "prepared"
    try:
        tiny = build_tiny_model(tmp / "tiny")
        plain = {k: v for k, v in os.environ.items() if k != "USE_TF"} | OFFLINE | {"INTERNLM2_PATH": str(tiny)}
        no_tf = plain | {"USE_TF": "0"}
        rows: list[tuple[str, float, str]] = []

        ours = write_config(tmp, "ours", "auto")
        t = timed([str(BIN / "benchbridge"), "run", str(ours), "--only", "opencompass", "--no-cache"], plain, tmp)
        rows.append(("benchbridge run (tasks inside one OpenCompass process)", t, "1 + benchbridge"))

        by_hand = write_config(tmp, "by_hand", "subprocess")
        t = timed([str(BIN / "benchbridge"), "prepare", str(by_hand), "--out", str(prep)], plain, tmp)
        rows.append(("benchbridge prepare alone (load, validate, write the config)", t, "benchbridge"))
        oc_folder = prep / "opencompass"
        cmd = [str(BIN / "opencompass"), str(oc_folder / "eval_by_hand.py")]

        def by_hand_run(env: dict[str, str], extra: list[str]) -> tuple[float, int]:
            seconds = timed(cmd + extra, env, oc_folder, lambda: shutil.rmtree(oc_folder / "outputs", True))
            return seconds, processes(oc_folder)

        stock, n_stock = by_hand_run(plain, [])
        rows.append(("opencompass by hand, stock LocalRunner", stock, str(n_stock)))
        if not args.quick:
            t, n = by_hand_run(no_tf, [])
            rows.append(("opencompass by hand, LocalRunner, USE_TF=0", t, str(n)))
        t, _ = by_hand_run(no_tf, ["--debug"])
        rows.append(("opencompass by hand --debug, USE_TF=0 (one process)", t, "1"))
        if not args.quick:
            layered = write_config(tmp, "layered", "subprocess")
            t = timed(
                [str(BIN / "benchbridge"), "run", str(layered), "--only", "opencompass", "--no-cache"], plain, tmp
            )
            rows.append(("benchbridge run, execution: subprocess (by-hand runner)", t, f"{n_stock} + benchbridge"))

        imports = [
            ("import opencompass.cli.main (one process), tensorflow importable", plain),
            ("import opencompass.cli.main (one process), USE_TF=0", no_tf),
        ]
        import_rows = [
            (label, timed([sys.executable, "-c", "import opencompass.cli.main"], env, tmp), "1")
            for label, env in imports
        ]

        width = max(len(r[0]) for r in rows + import_rows)
        print(f"\nOpenCompass overhead: {CONFIG.relative_to(ROOT)} (ceval_gen, 2 subjects x 4 questions, 5-shot),")
        print(f"tiny random Qwen2 in place of internlm2, CPU, {os.cpu_count()} cores\n")
        print(f"| {'run':<{width}} | wall s | python processes |")
        print(f"|{'-' * (width + 2)}|-------:|------------------|")
        for label, seconds, procs in rows + import_rows:
            print(f"| {label:<{width}} | {seconds:6.1f} | {procs:<16} |")
        print(f"\nratio benchbridge run / opencompass by hand (stock): {rows[0][1] / stock:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
