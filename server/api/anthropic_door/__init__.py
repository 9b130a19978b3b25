"""The Anthropic Messages door (/anthropic/v1): app.py serves it, wire.py translates."""
