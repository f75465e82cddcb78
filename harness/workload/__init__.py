"""Workloads: what each request asks for (synthetic text, datasets, shared prefixes,
conversations).

The ``workload:`` section of a scenario is configuration and lives in ``harness.spec.workload``;
``build.build_workload`` turns it into a ``base.Workload`` whose numbered sessions yield
``RequestSpec``s, seeded and reproducible.
"""
