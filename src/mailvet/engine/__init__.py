"""mailvet.engine: the verification pipeline.

``Engine`` here is the protocol the API and the batch runner depend on;
``mailvet.engine.pipeline.Engine`` implements it.
"""

from mailvet.engine.protocol import Checked, Engine

__all__ = ["Checked", "Engine"]
