"""The Redis transport: how a run and its workers talk through a Redis broker."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def redis_client(url: str) -> redis.Redis:
    """A Redis client that rides out short connection drops (5 retries with backoff)."""
    return redis.Redis.from_url(
        url, retry=Retry(ExponentialBackoff(cap=2.0), 5),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        health_check_interval=30)
