"""The control merge rules (request over key, body over headers)."""

from __future__ import annotations

from tierline.routing.controls import with_defaults


def test_a_request_knob_replaces_the_keys_ranking() -> None:
    # a knob asks for learned routing with it: the key's strategy / sort would ignore it
    assert with_defaults({"max_loss": 0.05}, {"strategy": "cheapest"}) == {"max_loss": 0.05}
    assert with_defaults({"max_loss": 0.05}, {"sort": "price", "fallbacks": False}) == {
        "max_loss": 0.05, "fallbacks": False}
    assert with_defaults({"strategy": "ordered"}, {"sort": "price", "quality": 0.8}) == {
        "strategy": "ordered", "quality": 0.8}
    assert with_defaults({"region": "eu"}, {"strategy": "cheapest"}) == {
        "region": "eu", "strategy": "cheapest"}
