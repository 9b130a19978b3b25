"""The generation core, free of any transport: what every API adapter calls.

engine.py      Engine: validate -> route -> provider -> answer, unary and streamed
validation.py  the request checks (every bad field at once) and capability checks
fold.py        the one place a stream of part deltas becomes a whole answer
retry.py       the one retry layer: only before the first chunk
limits.py      request size limits
"""

from server.core.engine import Answer, AnswerStream, Call, Engine
from server.core.limits import Limits

__all__ = ["Answer", "AnswerStream", "Call", "Engine", "Limits"]
