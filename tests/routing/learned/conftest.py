"""Shared fixtures: a tiny synthetic routing-outcomes data set and a router trained on it."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

STRONG, WEAK = "big-model", "small-model"


def routing_data_dir() -> Path:
    env = os.environ.get("TIERLINE_ROUTING_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "routing-data"


def _line(i: int, split: str, rng: random.Random) -> dict[str, Any]:
    hard = i % 3 == 0
    maths = i % 2 == 0
    words = ["integral", "matrix", "prime"] if hard else ["apple", "colour", "river"]
    text = f"Question {i}: " + " ".join(rng.choice(words) for _ in range(8))
    if maths:
        text += " compute 17 * 23 + 5 = ?"
    strong = 1.0 if rng.random() < (0.7 if hard else 0.95) else 0.0
    weak = 1.0 if rng.random() < (0.2 if hard else 0.9) else 0.0
    return {
        "id": f"synth/{i}",
        "source": "synth",
        "task": "synth",
        "split": split,
        "messages": [{"role": "user", "content": text}],
        "outcomes": {
            STRONG: {"score": strong, "cost_usd": 0.01, "output_chars": 400},
            WEAK: {"score": weak, "cost_usd": 0.001, "output_chars": 300},
        },
        "flags": ["contaminated"] if i == 5 else [],
    }


@pytest.fixture(scope="session")
def synth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "synth.jsonl"
    lines = [_line(i, "test" if i % 5 == 0 else "train", rng) for i in range(400)]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    (path.parent / "models.json").write_text(
        json.dumps(
            {
                STRONG: {"input_usd_per_mtok": 10.0, "output_usd_per_mtok": 30.0},
                WEAK: {"input_usd_per_mtok": 0.5, "output_usd_per_mtok": 0.5},
            }
        )
    )
    return path


@pytest.fixture(scope="session")
def synth_router_file(synth_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn")
    from tierline.routing.learned.data import load_outcomes
    from tierline.routing.learned.features import FeatureConfig
    from tierline.routing.learned.train import train_router

    ex = load_outcomes(synth_file, split="train")
    router = train_router(ex, config=FeatureConfig(bits=12))
    out = tmp_path_factory.mktemp("router") / "r.npz"
    router.save(out)
    return out
