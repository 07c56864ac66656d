"""Scoring: the lm-eval bridge, paired comparisons of runs, and plots of a run."""
