"""Local tooling: moto's and Prefect's servers as child processes
(:mod:`~pixelflow.local.processes`) and the whole event-driven stack on one machine
(:mod:`~pixelflow.local.stack`)."""
