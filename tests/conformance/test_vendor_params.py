"""vendor_params: passed through, but never over what the typed request controls."""

from __future__ import annotations

import pytest

from server.errors import InvalidRequest
from tests.conformance.requests import chat, user


async def test_vendor_params_reach_the_body(harness, vendor, fake):
    fake.script(vendor.text_reply(["ok"]))
    key, value, where = vendor.passthrough_example
    await harness.unary(chat(user("hi"), vendor_params={key: value}))
    assert where(fake.requests[0].json()) == value


async def test_every_reserved_key_is_refused(harness, vendor, fake):
    provider = harness.engine().router.default.provider
    assert provider.reserved_vendor_keys, "a provider reserves at least its conversation key"
    for path in sorted(provider.reserved_vendor_keys):
        params: dict = {}
        node = params
        *parents, leaf = path.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = 1
        with pytest.raises(InvalidRequest) as caught:
            await harness.unary(chat(user("hi"), vendor_params=params))
        assert f"vendor_params.{path}" in caught.value.violations, path
    assert not fake.requests, "nothing reached the vendor"
