"""One router per resource: system, images, jobs, models, thresholds, predict, results (the inspection log)."""
