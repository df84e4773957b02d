"""Train/test runs: the batch trainer (and its Dask form), the online and stream
learners, evaluation and the first-day figures. Imports nothing, so importing one
module loads no other."""
