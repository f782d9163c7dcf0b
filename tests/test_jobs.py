"""The one progress protocol (napari_biogans.jobs): run, nesting, stop flag."""

from napari_biogans import jobs


def _count(n, stage="count"):
    for i in range(1, n + 1):
        yield jobs.Update(done=i, total=n, stage=stage)
    return n * 10


def test_run_returns_the_result_and_reports_every_update():
    seen = []
    assert jobs.run(_count(3), seen.append) == 30
    assert [u.done for u in seen] == [1, 2, 3] and all(u.total == 3 for u in seen)


def test_within_maps_an_inner_job_into_the_outer_progress():
    def outer():
        first = yield from jobs.within(_count(2), 0, 5, "first")
        second = yield from jobs.within(_count(3), 2, 5, "second")
        return first + second

    seen = []
    assert jobs.run(outer(), seen.append) == 50
    assert [(u.done, u.total, u.stage) for u in seen] == [
        (1, 5, "first"), (2, 5, "first"), (3, 5, "second"), (4, 5, "second"), (5, 5, "second")]


def test_stop_flag_is_false_until_set():
    flag = jobs.StopFlag()
    assert not flag
    flag.set()
    assert flag
