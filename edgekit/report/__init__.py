"""Reports: rows joined from manifest + benchmarks (``rows``), a terminal table (``table``). Import from the
submodule: this package ``__init__`` stays empty so ``table`` can be used from low layers."""
