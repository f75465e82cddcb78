"""The harness client under load: `harness.load.client.send` from N greenlets, as the driver
runs it.

A gevent-patched process, a geventhttpclient client taken from a Locust FastHttpSession's
pool sized to N (what FastHttpUser builds), N greenlets each sending its next request when
the last one ends (closed loop). Writes the arrival time of every content chunk that
arrived inside the measuring window, and the process CPU time spent over that window.

    python harness_side.py URL STREAMS WARMUP_S DURATION_S OUT_NPZ
"""

from gevent import monkey

monkey.patch_all()

import itertools  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from geventhttpclient.url import URL  # noqa: E402
from locust.contrib.fasthttp import FastHttpSession  # noqa: E402
from locust.env import Environment  # noqa: E402

from harness.load.client import Exchange, RequestOptions, send  # noqa: E402
from harness.load.openai_api import Endpoint  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from window import HEADERS, PATH, Window, body_for, save  # noqa: E402


def main() -> None:
    base, streams = sys.argv[1], int(sys.argv[2])
    warmup_s, duration_s, out = float(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5])
    env = Environment()
    session = FastHttpSession(
        base, request_event=env.events.request, user=None, concurrency=streams,
        network_timeout=60.0, connection_timeout=60.0,
    )  # fmt: skip
    http = session.client.clientpool.get_client(URL(base + PATH))
    opts = RequestOptions(
        endpoint=Endpoint(base_url=base, path=PATH, headers=HEADERS, api_key=None),
        stream=True,
        request_timeout_s=60.0,
    )
    window = Window(warmup_s, duration_s)
    done: list[tuple[int, Exchange]] = []
    counter = itertools.count()

    def user() -> None:
        while time.monotonic() < window.end:
            rid = next(counter)
            done.append((rid, send(http, opts, body_for(rid), "cut")))

    users = [gevent.spawn(user) for _ in range(streams)]
    gevent.sleep(max(0.0, window.start - time.monotonic()))
    window.open()
    gevent.sleep(max(0.0, window.end - time.monotonic()))
    window.close()
    gevent.joinall(users, timeout=30)
    save(out, window, [(rid, ex.chunk_times, ex.error is not None) for rid, ex in done])


if __name__ == "__main__":
    main()
