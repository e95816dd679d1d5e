"""FID weights are a server setting: a client-chosen path (which would make a worker open any file)
is refused with 422, for jobs and batches alike, before anything is stored."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("path, body", [
    ("/v1/jobs", {"real": {"catalog": "digits"}, "fake": {"catalog": "digits"}}),
    ("/v1/batches", {"real": {"catalog": "digits"}, "fakes": [{"label": "a", "fake": {"catalog": "digits"}}]}),
])
def test_client_chosen_fid_weights_are_refused(live_service, path, body):
    with live_service.client() as c:
        before = len(c.get("/v1/jobs", params={"limit": 100}).json()["items"])
        r = c.post(path, json={**body, "options": {"fid": True, "fid_weights": "/etc/hostname"}})
        assert r.status_code == 422, r.text
        assert "fid_weights" in r.json()["detail"] and "W1_FID_WEIGHTS" in r.json()["detail"]
        assert len(c.get("/v1/jobs", params={"limit": 100}).json()["items"]) == before
