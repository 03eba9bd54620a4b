"""Files, local or remote: transient errors retried, and the clean-up of half-written files (no Ray)."""

import pytest

from wsss_ray.store.files import retry_transient


def test_only_transient_errors_are_tried_again():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate.")
        return "written"

    assert retry_transient(flaky, backoff=0.01) == "written" and len(calls) == 3
    denied = []

    def forbidden():
        denied.append(1)
        raise OSError("AWS Error ACCESS_DENIED during PutObject operation: Access Denied")

    with pytest.raises(OSError, match="ACCESS_DENIED"):
        retry_transient(forbidden, backoff=0.01)
    assert len(denied) == 1


def test_clearing_half_written_files_leaves_claims_alone_and_files_moved_into_place_meanwhile(tmp_path,
                                                                                              monkeypatch):
    """A killed run's temporaries go; the heartbeat's temporary and one that a write task
    moves into place between the listing and the delete are not an error."""
    import wsss_ray.store.output as output

    (tmp_path / ".part-a.parquet.tmp-0123456789ab").write_bytes(b"half")
    (tmp_path / ".part-b.parquet.tmp-0123456789ab").write_bytes(b"moving")
    (tmp_path / "._claim-run.json.tmp-0123456789ab").write_bytes(b"{}")
    (tmp_path / "part-c.parquet").write_bytes(b"whole")
    real = output.list_files

    def list_then_move(folder):
        listed = real(folder)
        (tmp_path / ".part-b.parquet.tmp-0123456789ab").rename(tmp_path / "part-b.parquet")
        return listed

    monkeypatch.setattr(output, "list_files", list_then_move)
    output.remove_temporaries(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["._claim-run.json.tmp-0123456789ab", "part-b.parquet",
                                                         "part-c.parquet"]
