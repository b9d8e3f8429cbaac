"""Steps of ``make demo``: each module has ``run(root, ...)`` and prints what it shows."""
