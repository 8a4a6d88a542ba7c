"""Benchmarks of the jaxmarket kernels and the plain NumPy baseline they are measured against."""
