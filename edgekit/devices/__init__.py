"""Android devices over adb: one function runs every adb command (``run_adb``), device info,
cached pushes, benchmarks on the device (``bench_adb`` with ``AdbBenchOptions``), and the ``adb``
device backend of ``edgekit.benchmarking.targets`` (``adb_backend``)."""
