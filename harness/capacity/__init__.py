"""Capacity planning: the highest load a replica holds within the SLO, found by bracketing and
bisecting over probe runs, and what it means for replicas, autoscaling and cost."""
