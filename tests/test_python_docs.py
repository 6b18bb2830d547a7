"""The W&B-style training script of docs/python.md, run as written against a real registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import artfs
from tests.pyapi_helpers import Target, private_dirs, target

__all__ = ["private_dirs", "target"]  # fixtures

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).parents[1]


def script_from_docs() -> str:
    text = (ROOT / "docs" / "python.md").read_text()
    block = text.split("<!-- train.py -->", 1)[1].split("<!-- end train.py -->", 1)[0]
    body = block.strip()
    assert body.startswith("```python") and body.endswith("```")
    return body[len("```python") : -3]


def test_the_training_script_of_the_docs_runs(target: Target, tmp_path: Path) -> None:
    data = tmp_path / "mnist"
    (data / "images").mkdir(parents=True)
    for i in range(5):
        (data / "images" / f"{i}.png").write_bytes(bytes([i]) * 100)
    (data / "labels.json").write_text(json.dumps({str(i): i % 2 for i in range(5)}))
    cache = tmp_path / "cache"
    with artfs.Registry(target.location, cache_dir=cache) as reg:
        dataset = reg.put(data, "demo/mnist", type="dataset")
    (tmp_path / "train.py").write_text(script_from_docs())
    proc = subprocess.run(
        [sys.executable, "train.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "ARTFS_REGISTRY": target.location, "ARTFS_CACHE_DIR": str(cache)},
    )
    assert proc.returncode == 0, proc.stderr
    eval_json = json.dumps({"accuracy": 0.5})
    assert proc.stdout.split() == ["demo/model:v1", "uploaded", str(len(eval_json)), "bytes"]
    with artfs.Registry(target.location, cache_dir=cache) as reg:
        best = reg.version("demo/model:best")
        assert best.number == 1 and best.inputs == (dataset.ref,)
        assert best.metadata == {"accuracy": 0.5}
        assert [f.path for f in best.files()] == ["config.json", "eval/eval.json", "weights.bin"]
        assert best.read_bytes("eval/eval.json") == eval_json.encode()
        candidate = reg.version("demo/model:candidate")
        assert candidate.number == 0 and candidate.inputs == (dataset.ref,)
        assert candidate.type == "model"
    # the dataset was downloaded to the default place, intact
    dataset_dir = tmp_path / "artifacts" / "demo" / "mnist" / "v0"
    with artfs.Registry(target.location, cache_dir=cache) as reg:
        reg.version("demo/mnist:v0").verify(dataset_dir)
