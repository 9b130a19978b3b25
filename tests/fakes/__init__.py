"""Local fake vendor servers that speak each vendor's exact wire protocol."""

# An API key that looks real; tests assert it never shows in an error message.
KEY = "sk-test-9f8e7d6c5b4a"
