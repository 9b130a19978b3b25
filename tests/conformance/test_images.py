"""Images in user messages: inline bytes and URIs reach the vendor intact."""

from __future__ import annotations

import base64

from tests.conformance.requests import chat
from tests.conformance.vendor import UsageSpec, expected_sent

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


async def test_inline_image_and_uri_round_trip(harness, vendor, fake):
    fake.script(vendor.text_reply(["Two images."], usage=UsageSpec(300, 3)))
    request = chat(
        {
            "role": "ROLE_USER",
            "parts": [
                {"text": "Compare"},
                {"image": {"mime_type": "image/png", "data": base64.b64encode(PNG).decode()}},
                {"text": "with"},
                {"image": {"mime_type": "image/jpeg", "uri": "https://example.com/cat.jpg"}},
            ],
        }
    )
    result = await harness.unary(request)
    assert result.texts() == ["Two images."]
    assert vendor.decode(fake.requests[0]) == expected_sent(request, vendor, "model-1")


async def test_data_url_is_sent_as_inline_image(harness, vendor, fake):
    fake.script(vendor.text_reply(["A pixel."]))
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    request = chat({"role": "ROLE_USER", "parts": [{"text": "What is this?"}, {"image": {"uri": url}}]})
    await harness.unary(request)
    (message,) = vendor.decode(fake.requests[0]).messages
    assert message[1][1] in (("image", "image/png", PNG), ("image_uri", url))
