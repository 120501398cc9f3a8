"""Benchmarks: latency statistics (``stats``), result rows (``result``), host runners (``host``), sequence
scaling (``seq``), multi-variant artifacts (``variants``) and device backends (``targets``). Import from the
submodule: this package ``__init__`` stays empty so its lowest modules can be used from low layers."""
