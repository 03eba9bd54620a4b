"""Jobs held at a known point, so that a test's kill lands part-way whatever the machine's speed."""

from __future__ import annotations

import threading


def stalling_cam_stage(after: int) -> type:
    """The job's CAM actor, but it labels only its first `after` batches and then waits for good:
    a job that writes those rows and can never finish (until its processes are killed)."""
    from wsss_ray.pipeline import CamStage

    class StallingCamStage(CamStage):  # defined in a function, so Ray pickles it by value
        batches = 0

        def __call__(self, batch: dict) -> dict:
            self.batches += 1
            if self.batches > after:
                threading.Event().wait()
            return super().__call__(batch)

    return StallingCamStage
