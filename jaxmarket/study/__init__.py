"""Studies: the study file (config, keys), the plan of a run, the dataset store, the run."""
