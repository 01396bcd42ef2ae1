"""Which calls share a Celery message (pure decision, no broker)."""

from celeriac.orchestrator.packing import PACK_MAX, FirstBurst, pack_size


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
