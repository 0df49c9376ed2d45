"""The handler the chaos suite's workers run: the SHA-256 of the payload, after a short pause so
that a killed worker is often caught holding a task."""

from __future__ import annotations

import hashlib
import random
import time


def checksum(payload: bytes) -> dict[str, str]:
    time.sleep(random.uniform(0.03, 0.12))
    return {"sha256": hashlib.sha256(payload).hexdigest()}
