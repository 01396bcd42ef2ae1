"""What the orchestrator and its workers must agree on; both import it, it imports neither.

- ``payload``: signed frames and the run's key; ``call``: the call and its failure;
  ``message``: the task name and body type; ``keys``: names on the broker; ``runfile``: what a
  worker needs to join a run; ``options``: worker options the orchestrator checks;
  ``alive``, ``deaths``: what the broker says about workers; ``revokes``, ``runend``: what a
  run tells its workers (signed).
- ``base``: the transport seam (what the orchestrator needs from a broker);
  ``redis_transport`` and ``redis_recovery``: its Redis implementation.
"""
