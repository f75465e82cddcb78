"""The load: Locust driven as a library (schedules, the streaming client, SSE parsing,
OpenAI request bodies), the target's discovery, distributed master and workers, the load guard,
the progress line and the web UI. Every request ends as one ``records.record.RequestRecord``.

Importing this package patches the standard library with gevent (below), so only the flows
that drive load (``run``, ``ui``, ``worker``) import it; judging a stored run never does."""

from gevent import monkey

# Locust would patch on its own import; doing it here, first, means nothing of the load stage
# (nor anything a flow imports after it) ever holds an unpatched socket, lock or ssl module.
monkey.patch_all()
