"""`rsssl-bench`: speed as ratios measured in one run (steps against peers, the data layer, the
evaluation probes), written to `experiments/benchmarks/BENCHMARKS.md` and a JSON of raw figures."""
