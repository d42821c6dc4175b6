"""One router per resource: system, images, jobs, models, predict (and results)."""
