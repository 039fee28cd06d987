"""Benchmark engines (floor 3): the exact-posterior GMM suite; drivers and tables live in evaluation/."""
