"""Unit tests: no broker, no Celery worker."""
