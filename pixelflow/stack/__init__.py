"""PixelFlow's event chain on one machine, and its provisioning.

* :func:`provision` (:mod:`~pixelflow.stack.provision`) creates the upload and output buckets,
  the SQS queue with its dead-letter queue and redrive policy, the queue policy and the upload
  bucket's ``s3:ObjectCreated:*`` notification, idempotently, on AWS or on a local endpoint
  (moto's server); the same module sets up the local Prefect server (work pool, automations,
  deployment).
* :class:`Stack` (:mod:`~pixelflow.stack.services`) runs the whole chain as real child
  processes: moto server, Prefect server, the ``local`` deployment with its upload trigger, a
  process worker, the bridge and the reconciler. ``pixelflow stack up`` / ``pixelflow stack
  down`` drive it. It composes :class:`~pixelflow.stack.supervisor.Supervisor` (child processes
  and the state file), :class:`~pixelflow.stack.prefect_api.PrefectApi` (queries to the Prefect
  server) and :class:`~pixelflow.stack.uploads.Uploads` (uploads and the manifests they become).
* :mod:`~pixelflow.stack.config` holds :class:`StackConfig`; :mod:`~pixelflow.stack.state` reads
  the state file and stops a stack from another process.
"""

from pixelflow.stack.config import (
    DEFAULT_MOTO_PORT,
    DEFAULT_PREFECT_PORT,
    DEPLOYMENT_NAME,
    FLOW_NAME,
    WORK_POOL,
    StackConfig,
    StackError,
)
from pixelflow.stack.prefect_api import PrefectApi
from pixelflow.stack.provision import NOTIFICATION_ID, Provisioned, provision
from pixelflow.stack.services import Stack
from pixelflow.stack.state import process_alive, read_state, stop_from_state
from pixelflow.stack.supervisor import Supervisor
from pixelflow.stack.uploads import Uploads, make_sample

__all__ = [
    "DEFAULT_MOTO_PORT", "DEFAULT_PREFECT_PORT", "DEPLOYMENT_NAME", "FLOW_NAME", "NOTIFICATION_ID", "WORK_POOL",
    "PrefectApi", "Provisioned", "Stack", "StackConfig", "StackError", "Supervisor", "Uploads", "make_sample",
    "process_alive", "provision", "read_state", "stop_from_state",
]
