"""One router per resource: system, images, jobs, models, thresholds, predict (and results)."""
