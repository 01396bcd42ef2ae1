"""The ``celeriac worker`` options the orchestrator checks before it starts any worker."""

CPU_AFFINITIES = ("none", "block", "alternating", "block-reverse")
