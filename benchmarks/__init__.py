"""Benchmarks of dockyard against prefect-docker's steps and the Docker engine, on the real farm.

Not tests: they run on demand (``bash benchmarks/run.sh``) and print figures
measured side by side in one run. See benchmarks/README.md.
"""
