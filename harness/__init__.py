"""What the tests and the benchmarks share, so that neither imports the other's helpers.

`harness.mount` runs real ``icefs mount`` daemons and reads Icechunk directly;
`harness.servers` starts object-store servers on 127.0.0.1. Not installed with
icefs: it lives beside ``tests/`` and ``benchmarks/`` in the source tree.
"""
