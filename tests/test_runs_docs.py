"""The run version of docs/python.md's training script, run as written against a real
registry: alone (it creates its run), and under ``artfs run`` (it attaches to that run);
and the async twin ``artfs.aio.run`` under trio and asyncio."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import artfs
import artfs.aio
from artfs.runs import FAILED, FINISHED
from tests.e2e import ARTFS
from tests.pyapi_helpers import Target, private_dirs, target

__all__ = ["private_dirs", "target"]  # fixtures

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).parents[1]


def script_from_docs() -> str:
    text = (ROOT / "docs" / "python.md").read_text()
    block = text.split("<!-- train_run.py -->", 1)[1].split("<!-- end train_run.py -->", 1)[0]
    body = block.strip()
    assert body.startswith("```python") and body.endswith("```")
    return body[len("```python") : -3]


def test_the_run_script_of_the_docs_runs_alone_and_under_artfs_run(
    target: Target, tmp_path: Path
) -> None:
    data = tmp_path / "mnist"
    (data / "images").mkdir(parents=True)
    for i in range(3):
        (data / "images" / f"{i}.png").write_bytes(bytes([i]) * 10)
    cache = tmp_path / "cache"
    with artfs.Registry(target.location, cache_dir=cache) as reg:
        dataset = reg.put(data, "demo/mnist", type="dataset")
    (tmp_path / "train_run.py").write_text(script_from_docs())
    env = {**os.environ, "ARTFS_REGISTRY": target.location, "ARTFS_CACHE_DIR": str(cache)}
    env.pop("ARTFS_RUN_ID", None)
    alone = subprocess.run(
        [sys.executable, "train_run.py"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert alone.returncode == 0, alone.stderr
    first_id, first_model, first_input = alone.stdout.split()
    assert (first_model, first_input) == ("demo/model:v0", dataset.ref)

    # under artfs run: the script attaches; the model is identical, so v0 comes back
    (data / "images" / "3.png").write_bytes(b"new")
    with artfs.Registry(target.location, cache_dir=cache) as reg:
        reg.put(data, "demo/mnist")  # demo/mnist:v1, one more image: another model
    under = subprocess.run(
        [*ARTFS, "run", "train-7", "--project", "demo", "--job-type", "train", "--",
         sys.executable, "train_run.py"],
        cwd=tmp_path, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert under.returncode == 0, under.stderr
    run_id, model_ref, input_ref = under.stdout.split()
    assert under.stderr.startswith(f"artfs run: demo/train-7 is run {run_id}")
    assert (model_ref, input_ref) == ("demo/model:v1", "demo/mnist:v1")

    with artfs.Registry(target.location, cache_dir=cache) as reg:
        runs = reg._call(reg.client.list_runs, "demo")
        assert [(r.id, r.name, r.status) for r in runs] == [
            (run_id, "train-7", FINISHED),
            (first_id, "train", FINISHED),
        ]
        attached = reg._call(reg.client.get_run, run_id)
        assert attached.config == {"lr": 0.1, "epochs": 3}  # the script's, merged in
        assert [o.ref for o in attached.outputs] == ["demo/model:v1"]
        model = reg.version("demo/model:candidate")
        assert model.number == 1 and model.inputs == ("demo/mnist:v1",)
        assert json.loads(model.read_bytes("config.json")) == {"lr": 0.1, "epochs": 3}


def test_the_async_twin_under_trio_and_asyncio(target: Target, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_bytes(b"x")
    with artfs.Registry(target.location, cache_dir=cache) as reg:
        reg.put(tmp_path / "d", "p/data")

    async def job(fail: bool) -> str:
        async with (
            artfs.aio.Registry(target.location, cache_dir=cache) as areg,
            artfs.aio.run("p/async", registry=areg.sync) as run,
        ):
            await run.use("p/data")
            await run.log(tmp_path / "d", "p/copy")
            assert (await run.update_config(k=1)) == {"k": 1}
            if fail:
                raise KeyError("x")
            return run.id

    first = trio.run(job, False)
    with pytest.raises(KeyError):
        asyncio.run(job(True))
    with artfs.Registry(target.location, cache_dir=cache) as reg:
        runs = {r.id: r for r in reg._call(reg.client.list_runs, "p")}
        assert runs[first].status == FINISHED and runs[first].output_count == 1
        assert sorted(r.status for r in runs.values()) == [FAILED, FINISHED]
