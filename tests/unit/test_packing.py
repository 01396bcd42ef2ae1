"""Which calls share a Celery message (pure decision, no broker)."""

from celeriac.orchestrator.packing import (
    PACK_LONG,
    PACK_MAX,
    PACK_SECONDS,
    FirstBurst,
    pack_size,
    pack_sizes,
)


def test_pack_size_never_packs_an_app_with_unknown_run_time():
    assert pack_size(5000, None) == 1


def test_a_few_calls_are_sent_one_per_message():
    assert pack_size(7, 0.00001) == 1


def test_short_calls_in_a_burst_share_messages_up_to_the_cap():
    assert pack_size(5000, 0.00001) == PACK_MAX


def test_a_burst_is_spread_over_at_least_four_messages():
    assert pack_size(40, 0.00001) == 10


def test_calls_queued_behind_thousands_are_packed_without_spreading():
    # a long run that submits as results come: a dozen calls behind 5,000 still to run
    assert pack_size(12, 0.00001, backlog=5000) == 12
    assert pack_size(3, 0.00001, backlog=5000) == 3
    assert pack_size(500, 0.00001, backlog=5000) == PACK_MAX
    assert pack_size(500, 0.05, backlog=5000) == 1  # long calls: still one per message


def test_a_packed_message_holds_about_twenty_milliseconds_of_work():
    assert pack_size(5000, 0.005) == 4
    assert pack_size(5000, 0.05) == 1  # 50 ms calls: one per message, workers stay balanced


def test_a_new_apps_first_calls_go_at_once_one_per_message_and_the_rest_wait():
    burst = FirstBurst(probes=8, hold=0.25)
    assert burst.send_now("f", 3, None, now=0.0) == 3
    assert burst.send_now("f", 1000, None, now=0.001) == 5   # the probes: 8 in all
    assert burst.send_now("f", 995, None, now=0.002) == 0    # the others wait


def test_held_calls_go_once_the_run_time_is_known():
    burst = FirstBurst(probes=8, hold=0.25)
    burst.send_now("f", 1000, None, now=0.0)
    assert burst.send_now("f", 992, 0.00002, now=0.003) == 992


def test_an_app_whose_probes_do_not_come_back_in_time_is_not_held_again():
    burst = FirstBurst(probes=8, hold=0.25)
    burst.send_now("slow", 100, None, now=0.0)
    assert burst.send_now("slow", 92, None, now=0.25) == 92
    assert burst.send_now("slow", 50, None, now=9.0) == 50


def test_each_app_has_its_own_probes():
    burst = FirstBurst(probes=8, hold=0.25)
    burst.send_now("f", 100, None, now=0.0)
    assert burst.send_now("g", 100, None, now=0.001) == 8


# ----------------------------------------------------------- guided sizes (slots known)

def _finish_times(sizes, runtime, slots, starts=None, per_message=0.003):
    """When each of ``slots`` workers ends, taking messages in order as each gets free."""
    free = list(starts or [0.0] * slots)
    for size in sizes:
        worker = free.index(min(free))
        free[worker] += per_message + size * runtime
    return free


def test_a_burst_of_equal_long_calls_goes_in_few_messages_and_every_worker_ends_together():
    sizes = pack_sizes(192, 0.05, lambda: 2)  # the sleep workload's held calls, 2 workers
    assert sum(sizes) == 192
    assert len(sizes) <= 40  # not 192: a worker pays its per-message cost 5x less often
    assert max(sizes) * 0.05 <= PACK_LONG
    for late in (0.0, 0.02, 0.05, 0.1):  # one worker starts later than the other
        ends = _finish_times(sizes, 0.05, 2, starts=[0.0, late])
        assert max(ends) - min(ends) <= 0.05 + 0.003  # within one call: nobody waits


def test_no_worker_waits_at_the_end_while_calls_are_queued_for_many_shapes():
    for runtime in (0.001, 0.005, 0.02, 0.05, 0.2):
        for slots in (1, 2, 3, 8, 32):
            for queued in (8, 50, 333, 5000):
                sizes = pack_sizes(queued, runtime, lambda s=slots: s)
                assert sum(sizes) == queued and min(sizes) >= 1
                assert max(sizes) <= PACK_MAX and max(sizes) <= max(1, queued // 4)
                ends = [end for end in _finish_times(sizes, runtime, slots) if end > 0]
                # the last messages are small: every worker that got one ends within
                # about one small message of the others
                assert max(ends) - min(ends) <= 2 * 0.003 + max(runtime, PACK_SECONDS), \
                    (runtime, slots, queued, sizes)


def test_calls_too_long_to_gain_are_never_packed():
    assert pack_sizes(200, 0.3, lambda: 2) == [1] * 200


def test_without_a_count_of_workers_calls_are_packed_as_before():
    for queued, runtime in ((200, 0.05), (5000, 0.005), (40, 0.00001), (5000, 0.00001)):
        size = pack_size(queued, runtime)
        sizes = pack_sizes(queued, runtime, lambda: None)
        assert sizes[:-1] == [size] * (len(sizes) - 1) and sum(sizes) == queued


def test_the_broker_is_not_asked_for_workers_when_the_sizes_do_not_depend_on_them():
    # (the sender thread asks; each ask held up sending no-ops by 2-15 ms on a busy machine)
    def no_lookup():
        raise AssertionError("slots looked up")
    assert pack_sizes(5000, 0.00001, no_lookup) == [PACK_MAX] * 78 + [8]  # no-ops: the cap
    assert pack_sizes(100, 0.00001, no_lookup) == [25] * 4  # a small piece of a burst
    assert pack_sizes(7, 0.05, no_lookup) == [1] * 7
    assert pack_sizes(100, None, no_lookup) == [1] * 100


def test_a_burst_waiting_for_workers_to_start_is_still_held_for_its_run_time():
    burst = FirstBurst(probes=8, hold=0.25, unserved=60)
    burst.send_now("f", 200, None, now=0.0)
    # the workers take a second to start: nobody could have run the probes yet
    assert burst.send_now("f", 192, None, now=0.3, served=lambda: False) == 0
    assert burst.send_now("f", 192, None, now=1.0, served=lambda: False) == 0
    assert burst.send_now("f", 192, 0.02, now=1.2) == 192  # the first probe came back


def test_a_burst_is_held_only_a_moment_once_a_worker_serves_its_queue():
    burst = FirstBurst(probes=8, hold=0.25, unserved=60)
    burst.send_now("f", 200, None, now=0.0)
    assert burst.send_now("f", 192, None, now=0.3, served=lambda: False) == 0
    assert burst.send_now("f", 192, None, now=0.4, served=lambda: True) == 0
    assert burst.send_now("f", 192, None, now=0.55, served=lambda: True) == 192


def test_a_burst_is_not_held_for_ever_when_no_worker_ever_comes():
    burst = FirstBurst(probes=8, hold=0.25, unserved=60)
    burst.send_now("f", 200, None, now=0.0)
    assert burst.send_now("f", 192, None, now=59.0, served=lambda: False) == 0
    assert burst.send_now("f", 192, None, now=61.0, served=lambda: False) == 192
