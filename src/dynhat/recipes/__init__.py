"""Recipes: the setups that the command line, the pipeline and the benchmarks share, written once.

Each recipe sits above the steps it combines (it may import training, search and runtime), so no step imports it.
"""
