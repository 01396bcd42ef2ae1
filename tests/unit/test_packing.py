"""Which calls share a Celery message (pure decision, no broker)."""

from celeriac.orchestrator.link import PACK_MAX, pack_size


def test_apps_with_unknown_run_time_are_never_packed():
    assert pack_size(5000, None) == 1


def test_a_few_calls_are_sent_one_per_message():
    assert pack_size(7, 0.00001) == 1


def test_short_calls_in_a_burst_share_messages_up_to_the_cap():
    assert pack_size(5000, 0.00001) == PACK_MAX


def test_a_burst_is_spread_over_at_least_four_messages():
    assert pack_size(40, 0.00001) == 10


def test_a_packed_message_holds_about_twenty_milliseconds_of_work():
    assert pack_size(5000, 0.005) == 4
    assert pack_size(5000, 0.05) == 1  # 50 ms calls: one per message, workers stay balanced
