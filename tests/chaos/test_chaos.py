"""The chaos suite (see ``tests/chaos/harness.py``): a short run by default, the long run with
``INFERBOX_CHAOS=long`` (at least 3,000 tasks, 12 worker kills, 3 broker kills, a Redis crash
and an index wipe). It needs ``redis-server`` on the PATH and starts its own."""

from __future__ import annotations

import os

import pytest

from tests.chaos.harness import LONG, SHORT, Chaos, redis_server_available

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1800)]


def test_nothing_is_lost_and_nothing_is_wrong(tmp_path, capsys):
    if not redis_server_available():
        message = "no redis-server on the PATH: the chaos suite starts its own"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " — CI=true requires it", pytrace=False)
        pytest.skip(message)
    profile = LONG if os.environ.get("INFERBOX_CHAOS", "").lower() == "long" else SHORT
    summary = Chaos(profile, tmp_path).run()
    with capsys.disabled():
        print("\n" + summary.line())
    assert summary.lost == 0 and summary.wrong == 0, "\n".join(summary.problems[:20])
    assert summary.submitted >= profile.tasks
    assert summary.succeeded + summary.failed == summary.submitted  # one final state each
    assert summary.worker_kills == profile.worker_kills
    assert summary.broker_kills == profile.broker_kills + 1  # the wipe restarts it too
    assert (summary.redis_restarts, summary.index_wipes) == (1, 1)
