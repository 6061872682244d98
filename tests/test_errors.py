"""`redact_secrets`: credentials quoted by an upstream are masked, ordinary text is not."""

from __future__ import annotations

import pytest

from tierline.errors import UpstreamStatusError, redact_secrets


@pytest.mark.parametrize("secret", [
    "sk-proj-abcDEF0123456789", "sk-ant-api03-AbCdEfGhIjKlMnOp-qrs_TUV", "sk-or-v1-0123abcd4567",
    "r8_AbCdEf0123456789", "gsk_0123456789abcdefABCD", "fw_3ZabcDEF012345", "csk-abc123def456",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",  # hex (Together)
    "AbCdEfGhIjKlMnOpQrStUvWxYz012345",  # 32 base62 (Mistral)
    "AIzaSyA-0123456789abcdefghijklmn",
])
def test_key_formats_are_masked(secret: str) -> None:
    for text in (f"Incorrect API key provided: {secret}.", f"Authorization: Bearer {secret}",
                 f"key {secret} is invalid", f"api_key={secret}"):
        out = redact_secrets(text)
        assert secret not in out and secret[6:] not in out, out
        assert "[redacted]" in out


@pytest.mark.parametrize("text", [
    "upstream 'together/meta-llama-3.1-70b-instruct-turbo' returned HTTP 404: model not found",
    "The model `mistralai/Mixtral-8x7B-Instruct-v0.1` does not exist",
    "This model's maximum context length is 8192 tokens, you requested 9000 tokens",
    "max_tokens: must be at most 4096", "The api key you provided is wrong",
    "Rate limit reached for gpt-4o-mini in organization org-abc on tokens per min",
    # model ids with vendor-like prefixes, and wording around auth
    "The model `key-value-extractor-v2` does not exist", "fw-llama-3-70b not found",
    "unknown model hf_internal_model", "requests must use the Bearer scheme",
    "Please provide a token: your API token is missing",
])
def test_ordinary_messages_are_kept(text: str) -> None:
    assert redact_secrets(text) == text


def test_upstream_errors_are_redacted_on_construction() -> None:
    e = UpstreamStatusError("upstream 'x' returned HTTP 401: Incorrect API key provided: "
                            "sk-live-0123456789abcdef", upstream_status=401, deployment="x")
    assert "0123456789abcdef" not in e.message and "0123456789abcdef" not in str(e.to_body())
