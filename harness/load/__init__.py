"""The load: Locust driven as a library (schedules, the streaming client, SSE parsing,
OpenAI request bodies), the target's discovery, distributed master and workers, the load guard,
the progress line and the web UI. Every request ends as one ``records.record.RequestRecord``.

Importing this package patches the standard library with gevent (below), so only the flows
that drive load (``run``, ``ui``, ``worker``) import it; judging a stored run never does."""

from gevent import monkey

# Locust would patch on its own import; doing it here, first, means nothing of the load stage
# (nor anything a flow imports after it) ever holds an unpatched socket, lock or ssl module.
monkey.patch_all()

import numpy.random.bit_generator  # noqa: E402  (after the patch, on purpose: see below)

# Every numpy random generator (a prompt's, per request) makes and takes a lock, which after
# the patch is gevent's RLock, written in Python: in a 128-stream run a tenth of the load
# loop's time went to drawing prompts, most of it in that lock. The OS lock is as correct
# here: numpy holds it only inside C code, which never yields to another greenlet.
numpy.random.bit_generator.RLock = monkey.get_original("_thread", "RLock")  # type: ignore[attr-defined]
