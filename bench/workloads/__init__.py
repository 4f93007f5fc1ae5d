"""Workloads as data: each TOML file here is one workload; bench/workload.py loads them."""
