"""What importing the load package does to the process: gevent's patches, and numpy's random
generators keeping the OS lock (gevent's RLock, in Python, made every prompt draw slow)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_load_process_is_patched_and_its_prompt_generators_take_the_os_lock() -> None:
    script = (
        "import json, threading\n"
        "import harness.load\n"
        "import numpy as np\n"
        "from gevent import monkey\n"
        "from harness.workload.base import session_rng\n"
        "rng = session_rng(1, 7)\n"
        "print(json.dumps({'patched': monkey.is_module_patched('threading'),\n"
        "                  'lock': type(rng.bit_generator.lock).__module__,\n"
        "                  'draw': rng.integers(0, 1000, size=3).tolist()}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["patched"] is True
    assert out["lock"] == "_thread"  # the C lock, not threading's Python one on gevent's
    # The same numbers as an unpatched process: the lock changes nothing of the stream.
    import numpy as np

    assert out["draw"] == np.random.default_rng((1, 7)).integers(0, 1000, size=3).tolist()
