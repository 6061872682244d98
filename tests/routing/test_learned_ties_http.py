"""Deployments that share a router profile share its prediction: every learned ranking must
then prefer the cheapest of them, not the one listed first (catalog order)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.mocks.openai_server import MockOpenAI
from tests.routing.test_strategies_http import STRONG, WEAK, FakePredictor, ask
from tierline.config import parse_config
from tierline.gateway.app import create_app
from tierline.gateway.server import GatewayThread


@pytest.fixture(scope="module")
async def mock() -> AsyncIterator[MockOpenAI]:
    m = MockOpenAI()
    await m.start()
    yield m
    await m.stop()


@pytest.fixture(scope="module")
def gw(mock: MockOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    tmp: Path = tmp_path_factory.mktemp("ties")
    p = {"base_url": mock.url + "/v1", "requires_key": False}
    raw = {
        "server": {"request_log": str(tmp / "r.sqlite3")},
        "catalog": {"builtin": False},
        "providers": {"up": p},
        # listed dearest first: a ranking that keeps list order on ties picks the dearest
        "deployments": [
            {"name": "frontier-dear", "provider": "up", "model": "a", "profile": STRONG,
             "price": {"input": 10, "output": 30}},
            {"name": "frontier-mid", "provider": "up", "model": "b", "profile": STRONG,
             "price": {"input": 2, "output": 10}},
            {"name": "frontier-cheap", "provider": "up", "model": "c", "profile": STRONG,
             "price": {"input": 0.15, "output": 0.6}},
            {"name": "weak-dear", "provider": "up", "model": "d", "profile": WEAK,
             "price": {"input": 1, "output": 1}},
            {"name": "weak-cheap", "provider": "up", "model": "e", "profile": WEAK,
             "price": {"input": 0.05, "output": 0.08}},
        ],
        "routing": {"strategy": "learned", "quality": 0.7},
    }
    app = create_app(parse_config(raw, "ties"), predictor=FakePredictor())
    with GatewayThread(app=app) as g:
        yield g


@pytest.fixture
async def client(gw: GatewayThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as c:
        yield c


async def test_no_candidate_reaches_the_target_picks_the_cheapest_of_the_best(
    client: httpx.AsyncClient,
) -> None:
    r = await ask(client, "prove it", tierline={"quality": 0.99})
    assert r.status_code == 200
    assert r.headers["x-tierline-model"] == "frontier-cheap"
    assert "none reach" in r.headers["x-tierline-route"]


async def test_cheapest_qualifying(client: httpx.AsyncClient) -> None:
    r = await ask(client, "easy")
    assert r.headers["x-tierline-model"] == "weak-cheap"
    r = await ask(client, "prove it")
    assert r.headers["x-tierline-model"] == "frontier-cheap"


async def test_sort_by_quality_breaks_ties_on_cost(client: httpx.AsyncClient) -> None:
    r = await ask(client, "easy", tierline={"sort": "quality"})
    assert r.headers["x-tierline-model"] == "frontier-cheap"


async def test_cost_weight_breaks_ties_on_cost(client: httpx.AsyncClient) -> None:
    # λ = 0: pure predicted quality, three-way tie between the frontier deployments
    r = await ask(client, "prove it", tierline={"cost_weight": 0.0})
    assert r.headers["x-tierline-model"] == "frontier-cheap"


def _two_model_app(mock: MockOpenAI, tmp_path: Path, routing: dict[str, object]) -> GatewayThread:
    p = {"base_url": mock.url + "/v1", "requires_key": False}
    raw = {
        "server": {"request_log": str(tmp_path / "r.sqlite3")},
        "catalog": {"builtin": False},
        "providers": {"up": p},
        "deployments": [
            {"name": "strong", "provider": "up", "model": "a", "profile": STRONG,
             "price": {"input": 10, "output": 30}},
            {"name": "weak", "provider": "up", "model": "b", "profile": WEAK,
             "price": {"input": 0.05, "output": 0.08}},
        ],
        "routing": {"strategy": "learned", **routing},
    }
    return GatewayThread(app=create_app(parse_config(raw, "knobs"), predictor=FakePredictor()))


async def test_the_requests_knob_wins_over_the_configs(mock: MockOpenAI, tmp_path: Path) -> None:
    """The config routes by cost_weight; a request asking for a quality target gets one
    (it used to be ignored), and a request's cost_weight overrides the config's."""
    # "prove it": predicted gain 0.9 - 0.4 = 0.5 < 0.6 -> weak
    with _two_model_app(mock, tmp_path, {"cost_weight": 0.6}) as g:
        async with httpx.AsyncClient(base_url=g.base_url, timeout=30) as c:
            r = await ask(c, "prove it")
            assert r.headers["x-tierline-model"] == "weak"
            assert "cost" in r.headers["x-tierline-route"]
            r = await ask(c, "prove it", tierline={"quality": 0.85})
            assert r.headers["x-tierline-model"] == "strong"
            assert "qualifying" in r.headers["x-tierline-route"]
            r = await ask(c, "prove it", headers={"x-tierline-quality": "0.85"})
            assert r.headers["x-tierline-model"] == "strong"
            r = await ask(c, "prove it", tierline={"cost_weight": 0.3})
            assert r.headers["x-tierline-model"] == "strong"


async def test_no_knob_configured_ranks_by_gain(mock: MockOpenAI, tmp_path: Path) -> None:
    """No knob in the config: max_loss 0.12.  The easy prompt's predicted gain (0.95 -
    0.85 = 0.10) is below it -> weak, although the weak model's 0.85 would also pass a 0.7
    quality target; the hard prompt's (0.5) is above -> strong."""
    with _two_model_app(mock, tmp_path, {}) as g:
        async with httpx.AsyncClient(base_url=g.base_url, timeout=30) as c:
            r = await ask(c, "easy")
            assert r.headers["x-tierline-model"] == "weak"
            assert "within 0.12 of best" in r.headers["x-tierline-route"]
            r = await ask(c, "prove it")
            assert r.headers["x-tierline-model"] == "strong"
            # a request's own max_loss; two knobs in one request are a clear 400
            r = await ask(c, "prove it", tierline={"max_loss": 0.6})
            assert r.headers["x-tierline-model"] == "weak"
            r = await ask(c, "easy", headers={"x-tierline-max-loss": "0.05"})
            assert r.headers["x-tierline-model"] == "strong"
            r = await ask(c, "easy", tierline={"max_loss": 0.1, "quality": 0.9})
            assert r.status_code == 400
            err = r.json()["error"]
            assert "max_loss and quality" in err["message"] and err["param"] == "tierline.quality"
