"""Keep GPU 0 busy a set share of the time (bf16 matmuls, then sleep), for a set time.

A steady 70 % duty cycle lands NVML's utilization inside the runbook's 60-80 % band, so a
`harness run` beside it can show the GPU row judged on a real GPU.

    python3 docs/gpu-check/gpu_duty.py --duty 0.7 --seconds 45
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duty", type=float, default=0.7, help="busy share of each period")
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--period-ms", type=float, default=20.0)
    args = parser.parse_args()
    import torch  # only on the GPU machine

    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    for _ in range(20):  # warm up, then time one product
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(50):
        a @ b
    torch.cuda.synchronize()
    one = (time.perf_counter() - t0) / 50
    busy = args.period_ms / 1000 * args.duty
    per_period = max(1, round(busy / one))
    print(
        f"gpu_duty: one 4096^3 bf16 product {one * 1e3:.3f} ms; {per_period} per "
        f"{args.period_ms:g} ms period for a {args.duty:.0%} duty cycle",
        flush=True,
    )
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        for _ in range(per_period):
            a @ b
        torch.cuda.synchronize()
        rest = args.period_ms / 1000 - (time.perf_counter() - start)
        if rest > 0:
            time.sleep(rest)


if __name__ == "__main__":
    main()
