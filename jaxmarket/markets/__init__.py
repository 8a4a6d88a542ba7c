"""Market kinds: build a batch, run an algorithm, tabulate rows."""
