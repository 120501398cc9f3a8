"""Android devices over adb: one function runs every adb command (``run_adb``), device info,
cached pushes, and benchmarks on the device (``bench_on_adb``)."""
