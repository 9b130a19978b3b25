"""Tiny local proxies (HTTP CONNECT/forwarding, SOCKS5) that count what they relay,
and a fake upstream that can listen on any loopback address or speak TLS."""
