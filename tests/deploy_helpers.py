"""Helpers for the production-path tests: the ECS work pool from its base job template and the
``ecs`` deployment of prefect.yaml, registered with the real ``prefect deploy`` CLI
(:mod:`pixelflow.local.ecs`, shared with the benchmark)."""

from pixelflow.local.ecs import (BASE_JOB_TEMPLATE, PREFECT_YAML, base_job_template, create_ecs_pool,  # noqa: F401
                                 deploy_ecs, deployment_config, prefect_project)
