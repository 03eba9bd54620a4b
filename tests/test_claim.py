"""One writer per output: claims, their heartbeat, stale takeover and racing runs (local files, no Ray)."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from wsss_ray.store.claim import OutputBusy, OutputClaim, check_output, claim_path, claim_stands, read_claims
from wsss_ray.testing.waits import wait_until


def _fake_claim(output, run_id, host="elsewhere", pid=1, age=0.0, started=None):
    """A claim file the store last wrote `age` seconds ago (its modification time)."""
    path = output / claim_path(str(output), run_id).rsplit("/", 1)[1]
    started = time.time() - age - 5 if started is None else started
    path.write_text(json.dumps({"run_id": run_id, "host": host, "pid": pid, "started": started, "took_over": []}))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_a_second_run_on_a_held_output_refuses_naming_the_holder(tmp_path):
    with OutputClaim(str(tmp_path), "first") as first:
        assert claim_stands(str(tmp_path), "first") and first.took_over == []
        with pytest.raises(OutputBusy, match=r"being written by run first \(host .*pass another --output"):
            with OutputClaim(str(tmp_path), "second"):
                pass
        assert [c.run_id for c in read_claims(str(tmp_path))] == ["first"]  # the refused run left nothing
    assert read_claims(str(tmp_path)) == [] and not claim_stands(str(tmp_path), "first")
    with OutputClaim(str(tmp_path), "second") as second:  # free again once the first run is done
        assert second.took_over == []


def test_a_live_claim_from_another_host_holds_until_the_store_last_wrote_it_longer_ago_than_the_ttl(tmp_path):
    _fake_claim(tmp_path, "remote", age=30)
    with pytest.raises(OutputBusy, match="run remote"):
        with OutputClaim(str(tmp_path), "mine", ttl=60):
            pass
    with OutputClaim(str(tmp_path), "mine", ttl=20, grace=0) as claim:  # 30 s without a heartbeat: dead
        assert claim.took_over == ["remote"] and not claim_stands(str(tmp_path), "remote")


def test_a_claim_is_aged_by_the_store_clock_not_by_the_clock_of_the_host_that_wrote_it(tmp_path):
    """A host whose clock is an hour behind still holds its output; one an hour ahead cannot hold a dead one."""
    hour = 3600.0
    (tmp_path / "a").mkdir()
    _fake_claim(tmp_path / "a", "behind", started=time.time() - hour)
    with pytest.raises(OutputBusy, match="run behind .*last heartbeat [0-2] s ago"):
        with OutputClaim(str(tmp_path / "a"), "mine", ttl=60):
            pass
    (tmp_path / "b").mkdir()
    _fake_claim(tmp_path / "b", "ahead", age=120, started=time.time() + hour)
    with OutputClaim(str(tmp_path / "b"), "mine", ttl=60, grace=0) as claim:
        assert claim.took_over == ["ahead"]


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    import socket

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _fake_claim(tmp_path, "killed", host=socket.gethostname(), pid=int(gone.stdout))
    with OutputClaim(str(tmp_path), "rerun", grace=0) as claim:
        assert claim.took_over == ["killed"]


def test_the_heartbeat_renews_the_claim_and_stops_once_it_is_taken_over(tmp_path):
    path = tmp_path / claim_path(str(tmp_path), "beating").rsplit("/", 1)[1]
    with OutputClaim(str(tmp_path), "beating", heartbeat=0.05) as claim:
        os.utime(path, (0, 0))
        wait_until(lambda: path.stat().st_mtime > 0)             # rewritten by the heartbeat
        path.unlink()                                        # another run took it over
        wait_until(lambda: not claim._thread.is_alive())         # the heartbeat saw it and stopped
        assert read_claims(str(tmp_path)) == []              # not written back


def test_a_heartbeat_that_lands_after_a_takeover_brings_nothing_back(tmp_path):
    """The old run checked its claim, the takeover replaced it, then the old run's write landed."""
    output = str(tmp_path)
    with OutputClaim(output, "old", heartbeat=3600) as old:
        os.utime(tmp_path / "_claim-old.json", (time.time() - 120, time.time() - 120))  # looks dead
        with OutputClaim(output, "new", ttl=60, grace=0) as new:
            assert new.took_over == ["old"] and not claim_stands(output, "old")
            old._write()                                     # the late heartbeat
            assert (tmp_path / "_claim-old.json").exists()
            assert not claim_stands(output, "old") and claim_stands(output, "new")
            with pytest.raises(OutputBusy, match="being written by run new "):
                with OutputClaim(output, "third"):
                    pass
        assert list(tmp_path.iterdir()) == []                # the late claim went with the takeover's
    with OutputClaim(output, "fourth") as fourth:
        assert fourth.took_over == []


def test_of_runs_that_start_at_once_exactly_one_writes(tmp_path):
    for attempt in range(5):
        output = tmp_path / str(attempt)
        output.mkdir()
        barrier, entered, refused = threading.Barrier(3), [], []

        def start(run_id):
            barrier.wait()
            try:
                with OutputClaim(str(output), run_id):
                    entered.append(run_id)
                    wait_until(lambda: len(entered) + len(refused) == 3)  # held until the others gave up
            except OutputBusy:
                refused.append(run_id)

        threads = [threading.Thread(target=start, args=(f"run{i}",)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(entered) == 1 and len(refused) == 2, (entered, refused)


def _rows(ids):
    import pyarrow as pa

    return pa.table({"id": ids, "status": ["ok"] * len(ids)})


def test_a_write_task_that_outlives_its_killed_driver_adds_nothing_after_a_takeover(tmp_path):
    """The late write of a killed run: its claim is gone, so its file never lands beside the re-run's."""
    import socket

    from wsss_ray.store import parquet_files
    from wsss_ray.store import AtomicParquetSink, ClaimLost

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _fake_claim(tmp_path, "killed", host=socket.gethostname(), pid=int(gone.stdout))
    late = AtomicParquetSink(str(tmp_path), run_id="killed")
    late.write([_rows(["a", "b"])], None)                 # before the takeover its writes still land
    assert len(parquet_files(str(tmp_path))[1]) == 1
    with OutputClaim(str(tmp_path), "rerun", grace=0):
        with pytest.raises(ClaimLost, match="run killed's claim .* was taken over"):
            late.write([_rows(["c", "d"])], None)
        AtomicParquetSink(str(tmp_path), run_id="rerun").write([_rows(["c", "d"])], None)
    files = parquet_files(str(tmp_path))[1]
    assert len(files) == 2 and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f.rsplit("/", 1)[1] for f in files])              # no temporary left behind either


def test_the_claim_is_checked_after_the_file_is_written_just_before_it_is_moved(tmp_path, monkeypatch):
    import wsss_ray.store.writer as writer

    with OutputClaim(str(tmp_path), "slow"):
        real = writer.pq.write_table

        def write_then_lose_the_claim(table, where, filesystem):  # taken over while the file was being written
            real(table, where, filesystem=filesystem)
            (tmp_path / claim_path(str(tmp_path), "slow").rsplit("/", 1)[1]).unlink()

        monkeypatch.setattr(writer.pq, "write_table", write_then_lose_the_claim)
        with pytest.raises(writer.ClaimLost):
            writer.AtomicParquetSink(str(tmp_path), run_id="slow").write([_rows(["a"])], None)
    assert list(tmp_path.iterdir()) == []


def test_the_labelling_job_refuses_an_output_another_run_holds_before_any_work(tmp_path):
    import ray

    from wsss_ray.config import LabelJobConfig
    from wsss_ray.pipeline import run
    from wsss_ray.toyworld import generate

    manifest = generate(tmp_path / "toy", 2, seed=2_000_700)
    out = tmp_path / "out"
    with OutputClaim(str(out), "holder"):
        with pytest.raises(OutputBusy, match="is being written by run holder"):
            run(LabelJobConfig(input=str(manifest), output=str(out)))
        assert [p.name for p in out.iterdir()] == ["_claim-holder.json"] and not ray.is_initialized()


def test_a_job_error_is_one_line_and_exit_status_2(capsys):
    from wsss_ray.errors import exit_on_job_error

    with pytest.raises(SystemExit) as exit_:
        with exit_on_job_error("pseudolabel"):
            raise OutputBusy("output o is being written by run r; wait for it to finish or pass another --output")
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("[pseudolabel] error: output o is being written by run r; wait for it to "
                                       "finish or pass another --output\n")


def test_the_jobs_check_their_output_before_ray_starts_and_leave_nothing(tmp_path):
    check_output(str(tmp_path / "new"))                    # a folder that does not exist yet is writable
    assert list((tmp_path / "new").iterdir()) == []
    with OutputClaim(str(tmp_path / "new"), "holder"):
        with pytest.raises(OutputBusy, match="being written by run holder"):
            check_output(str(tmp_path / "new"))
    (tmp_path / "file").write_text("not a folder")
    from wsss_ray.store import OutputUnwritable

    with pytest.raises(OutputUnwritable, match="cannot write to the output .*file"):
        check_output(str(tmp_path / "file"))


@pytest.mark.parametrize("job, flags", [
    ("pseudolabel", ["--input", "a.jsonl"]), ("predict", ["--checkpoint", "model.pt", "--input", "a.jsonl"]),
    ("train", []), ("learn_prompts", []), ("tune", []),
])
def test_every_job_refuses_a_held_output_in_one_sentence_before_ray_starts(job, flags, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    import ray

    spec = importlib.util.spec_from_file_location(f"{job}_job", Path(__file__).parents[1] / "jobs" / f"{job}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    with OutputClaim(str(out), "holder"):
        with pytest.raises(SystemExit) as exit_:
            module.main([*flags, "--output", str(out)])
    assert exit_.value.code == 2 and not ray.is_initialized()
    assert capsys.readouterr().err.startswith(f"[{job}] error: output {out} is being written by run holder")
